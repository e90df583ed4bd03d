import { readFileSync } from 'node:fs';

/** Resident set size of process `pid` in bytes (VmRSS of /proc/<pid>/status), or undefined. */
export function readRss(pid: number): number | undefined {
  let status: string;
  try {
    status = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return undefined;
  }
  const match = /^VmRSS:\s+(\d+)\s+kB$/m.exec(status);
  return match === null ? undefined : Number(match[1]) * 1024;
}

/** Samples the RSS of `pid` every `intervalMs` until `stop()`, which returns the largest seen. */
export function sampleRss(pid: number, intervalMs = 100): { stop(): number } {
  let max = readRss(pid) ?? 0;
  const timer = setInterval(() => {
    max = Math.max(max, readRss(pid) ?? 0);
  }, intervalMs);
  return {
    stop() {
      clearInterval(timer);
      max = Math.max(max, readRss(pid) ?? 0);
      return max;
    },
  };
}

/** RSS of `pid` split as /proc/<pid>/status does: anonymous memory and mapped files. */
export interface RssBreakdown {
  rss: number;
  /** RssAnon: heap, stacks, malloc arenas. */
  anon: number;
  /** RssFile: pages of mapped files (code, and LevelDB tables read through mmap). */
  file: number;
}

export function readRssBreakdown(pid: number): RssBreakdown | undefined {
  let status: string;
  try {
    status = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return undefined;
  }
  const field = (name: string): number | undefined => {
    const match = new RegExp(`^${name}:\\s+(\\d+)\\s+kB$`, 'm').exec(status);
    return match === null ? undefined : Number(match[1]) * 1024;
  };
  const rss = field('VmRSS');
  if (rss === undefined) return undefined;
  return { rss, anon: field('RssAnon') ?? 0, file: field('RssFile') ?? 0 };
}

/**
 * Like `sampleRss`, but `stop()` returns the sample of largest RSS with its breakdown
 * (all zero if the process was never seen).
 */
export function sampleRssBreakdown(pid: number, intervalMs = 100): { stop(): RssBreakdown } {
  let peak: RssBreakdown = readRssBreakdown(pid) ?? { rss: 0, anon: 0, file: 0 };
  const sample = () => {
    const now = readRssBreakdown(pid);
    if (now !== undefined && now.rss > peak.rss) peak = now;
  };
  const timer = setInterval(sample, intervalMs);
  return {
    stop() {
      clearInterval(timer);
      sample();
      return peak;
    },
  };
}
