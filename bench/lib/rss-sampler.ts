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
