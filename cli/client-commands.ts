import { createWriteStream } from 'node:fs';
import { rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import cliProgress from 'cli-progress';
import { type Command, type CommanderError, InvalidArgumentError } from 'commander';
import {
  type AttachmentInfo,
  AttachmentState,
  type DaemonStatus,
  type Document,
  Soledad,
  SoledadError,
} from '../rpc/client.js';
import { defaultConfigDir, RPC_TOKEN_FILE } from '../rpc/rpc-paths.js';

/**
 * Exit codes of the client commands: 0 done, 1 the operation failed, 2 bad usage,
 * 3 the daemon is not running.
 */
export const EXIT = { OK: 0, ERROR: 1, USAGE: 2, DAEMON_NOT_RUNNING: 3 } as const;

const STATE_NAMES: Record<number, string> = {
  [AttachmentState.NONE]: 'NONE',
  [AttachmentState.LOCAL]: 'LOCAL',
  [AttachmentState.REMOTE]: 'REMOTE',
  [AttachmentState.SYNCED]: 'SYNCED',
};

interface GlobalOptions {
  url?: string;
  tokenFile?: string;
}

/**
 * Registers the commands that talk to a running daemon: put, get, state, ls, rm, evict,
 * pin, unpin, sync, status, events; and the global `--url` and `--token-file` options.
 */
export function registerClientCommands(program: Command): void {
  program
    .option('--url <url>', 'daemon RPC address (default: rpc.json in the config folder)')
    .option('--token-file <path>', 'daemon RPC token (default: rpc-token in the config folder)');

  command(program, 'put', 'store a file as an attachment (a new document unless --doc)')
    .argument('<file>', 'file to attach')
    .option('--doc <id>', 'attach to this existing document instead')
    .option('--upload', 'wait until the server holds it')
    .option('--json', 'print the result as JSON')
    .action(
      run(
        async (soledad, file: string, opts: { doc?: string; upload?: boolean; json?: boolean }) => {
          const size = (await stat(file)).size;
          const doc = opts.doc
            ? await requireDoc(soledad, opts.doc)
            : await soledad.createDoc({ name: basename(file), size });
          let info = await doc.putAttachment(file);
          await soledad.putDoc(doc);
          if (opts.upload) info = await soledad.uploadAttachment(info.blobId);
          if (opts.json) {
            printJson({ ...info, docId: doc.id, rev: doc.rev });
          } else {
            print(`${doc.id}\t${info.blobId}\t${STATE_NAMES[info.state]}`);
          }
        },
      ),
    );

  command(program, 'get', "write an attachment's plaintext to a file or stdout")
    .argument('<id>', 'a document id or a blob id')
    .option('-o, --output <path>', 'write here (atomically) instead of stdout')
    .action(
      run(async (soledad, id: string, opts: { output?: string }) => {
        const blobId = await resolveBlobId(soledad, id);
        const source = await soledad.openAttachment(blobId);
        if (opts.output === undefined) {
          await pipeline(source, process.stdout as Writable, { end: false });
          return;
        }
        const temp = join(dirname(opts.output), `.${basename(opts.output)}.${process.pid}.part`);
        try {
          await pipeline(
            source,
            createWriteStream(temp, { flags: 'wx', mode: 0o600, flush: true }),
          );
          await rename(temp, opts.output);
        } catch (err) {
          await rm(temp, { force: true });
          throw err;
        }
      }),
    );

  command(program, 'state', 'show the state of an attachment')
    .argument('<id>', 'a document id or a blob id')
    .option('--json', 'print the attachment record as JSON')
    .action(
      run(async (soledad, id: string, opts: { json?: boolean }) => {
        const blobId = await resolveBlobId(soledad, id);
        const info = await soledad.getAttachmentInfo(blobId);
        if (info === undefined) throw new SoledadError('not_found', `no attachment ${blobId}`);
        if (opts.json) printJson(info);
        else print(describe(info));
      }),
    );

  command(program, 'ls', 'list documents and their attachments')
    .option('--json', 'print a JSON array')
    .option('--all', 'include deleted documents')
    .action(
      run(async (soledad, opts: { json?: boolean; all?: boolean }) => {
        const [docs, attachments] = await Promise.all([
          soledad.listDocs({ includeDeleted: opts.all ?? false }),
          soledad.listAttachments(),
        ]);
        const byBlob = new Map(attachments.map((info) => [info.blobId, info]));
        const rows = docs.map((doc) => listing(doc, byBlob));
        if (opts.json) return printJson(rows);
        for (const row of rows) {
          const state = row.blobId ? STATE_NAMES[row.state] : '-';
          const size = row.size === null ? '-' : String(row.size);
          print([row.id, row.blobId ?? '-', state, size, row.name ?? ''].join('\t'));
        }
      }),
    );

  command(program, 'rm', 'delete a document and its attachment')
    .argument('<doc-id>')
    .action(
      run(async (soledad, id: string) => {
        const doc = await requireDoc(soledad, id);
        if (doc.blobId !== undefined) await doc.deleteAttachment();
        await soledad.deleteDoc(doc);
      }),
    );

  const attachmentAction = (
    name: string,
    summary: string,
    act: (soledad: Soledad, blobId: string) => Promise<AttachmentInfo>,
  ) =>
    command(program, name, summary)
      .argument('<id>', 'a document id or a blob id')
      .option('--json', 'print the attachment record as JSON')
      .action(
        run(async (soledad, id: string, opts: { json?: boolean }) => {
          const info = await act(soledad, await resolveBlobId(soledad, id));
          if (opts.json) printJson(info);
          else print(describe(info));
        }),
      );
  attachmentAction('evict', 'drop the local copy (the server must hold it)', (s, b) =>
    s.evictAttachment(b),
  );
  attachmentAction('pin', 'keep a local copy, downloading it if needed', (s, b) =>
    s.pinAttachment(b),
  );
  attachmentAction('unpin', 'stop keeping a local copy on purpose', (s, b) => s.unpinAttachment(b));

  command(program, 'sync', 'run remote sync now')
    .option('--json', 'print the result as JSON')
    .action(
      run(async (soledad, opts: { json?: boolean }) => {
        const result = await soledad.sync();
        if (opts.json) printJson(result);
        else {
          print(
            `uploaded ${result.uploaded}, marked remote ${result.markedRemote}, deleted ${result.deleted}`,
          );
        }
      }),
    );

  command(program, 'status', "summarise the daemon's state")
    .option('--json', 'print the status as JSON')
    .option('--watch', 'show live transfer progress until interrupted')
    .action(
      run(
        async (soledad, opts: { json?: boolean; watch?: boolean }) => {
          if (opts.watch) return watchStatus(soledad);
          const status = await soledad.status();
          if (opts.json) printJson(status);
          else print(summary(status));
        },
        { follow: (opts) => Boolean((opts as { watch?: boolean }).watch) },
      ),
    );

  command(program, 'events', 'print events as JSON lines, following live ones')
    .option('--after <seq>', 'first replay the kept events after this seq', parseSeq)
    .option('--progress', 'include transfer progress')
    .option('--no-follow', 'exit after the replayed events')
    .action(
      run(
        async (soledad, opts: { after?: number; progress?: boolean; follow: boolean }) => {
          soledad.on('event', (event) => print(JSON.stringify(event)));
          soledad.on('progress', (p) => print(JSON.stringify({ type: 'progress', ...p })));
          soledad.on('gap', (gap) => print(JSON.stringify({ type: 'gap', ...gap })));
          await soledad.subscribe({
            ...(opts.after === undefined ? {} : { after: opts.after }),
            progress: opts.progress ?? false,
          });
          if (opts.follow) await untilInterrupted();
        },
        { follow: (opts) => (opts as { follow: boolean }).follow },
      ),
    );
}

/** A subcommand whose usage errors exit with 2 (help and version with 0). */
function command(program: Command, name: string, summary: string): Command {
  return program
    .command(name)
    .description(summary)
    .exitOverride((err: CommanderError) => {
      const ok = err.code === 'commander.helpDisplayed' || err.code === 'commander.version';
      process.exit(ok ? EXIT.OK : EXIT.USAGE);
    });
}

type Action<A extends unknown[]> = (soledad: Soledad, ...args: A) => Promise<void>;

/**
 * Wraps an action: connects with the global options, runs, closes, and maps failures to
 * the documented exit codes with a one-line message on stderr.
 */
function run<A extends unknown[]>(
  action: Action<A>,
  { follow }: { follow?: (opts: unknown) => boolean } = {},
) {
  return async (...args: unknown[]): Promise<void> => {
    const cmd = args[args.length - 1] as Command;
    const opts = cmd.opts();
    const globals = cmd.optsWithGlobals() as GlobalOptions;
    let soledad: Soledad | undefined;
    try {
      soledad = await Soledad.connect({
        ...(globals.url === undefined ? {} : { url: globals.url }),
        ...(globals.tokenFile === undefined ? {} : { tokenFile: globals.tokenFile }),
        reconnect: follow?.(opts) ?? false,
      });
      await action(soledad, ...(args.slice(0, -1) as A));
      process.exitCode = EXIT.OK;
    } catch (err) {
      process.exitCode = report(err, globals);
    } finally {
      await soledad?.close();
    }
  };
}

function report(err: unknown, globals: GlobalOptions): number {
  if (!(err instanceof SoledadError)) {
    const code = (err as NodeJS.ErrnoException).code;
    const message = err instanceof Error ? err.message : String(err);
    process.stderr.write(
      `soledad: ${code === 'ENOENT' ? message.replace(/^ENOENT: /, '') : message}\n`,
    );
    return EXIT.ERROR;
  }
  if (err.code === 'daemon_not_running') {
    process.stderr.write(
      `soledad: ${err.message}.\n` +
        'Start it with `soledad daemon` (or `systemctl --user start soledad-daemon`), ' +
        'or point --url at where it listens.\n',
    );
    return EXIT.DAEMON_NOT_RUNNING;
  }
  if (err.code === 'rpc_unauthorized') {
    const tokenFile = globals.tokenFile ?? join(defaultConfigDir(), RPC_TOKEN_FILE);
    process.stderr.write(`soledad: ${err.message}; check ${tokenFile} (--token-file)\n`);
    return EXIT.ERROR;
  }
  process.stderr.write(`soledad: ${err.message} (${err.code})\n`);
  return EXIT.ERROR;
}

async function requireDoc(soledad: Soledad, id: string): Promise<Document> {
  const doc = await soledad.getDoc(id);
  if (doc === undefined || doc.deleted) throw new SoledadError('not_found', `no document ${id}`);
  return doc;
}

/** A document id names its attachment; anything else is taken as a blob id. */
async function resolveBlobId(soledad: Soledad, id: string): Promise<string> {
  const doc = await soledad.getDoc(id);
  if (doc !== undefined) {
    if (doc.blobId === undefined) {
      throw new SoledadError('not_found', `document ${id} has no attachment`);
    }
    return doc.blobId;
  }
  return id;
}

interface ListingRow {
  id: string;
  rev: string;
  deleted: boolean;
  name: string | null;
  blobId: string | null;
  state: number;
  machineState: string | null;
  size: number | null;
  pinned: boolean;
}

function listing(doc: Document, byBlob: Map<string, AttachmentInfo>): ListingRow {
  const info = doc.blobId === undefined ? undefined : byBlob.get(doc.blobId);
  // A watched file's document names it by its path in the watch folder.
  const name = doc.content.name ?? doc.content.path;
  return {
    id: doc.id,
    rev: doc.rev,
    deleted: doc.deleted,
    name: typeof name === 'string' ? name : null,
    blobId: doc.blobId ?? null,
    state: info?.state ?? AttachmentState.NONE,
    machineState: info?.machineState ?? null,
    size: info?.plaintextSize ?? info?.size ?? null,
    pinned: info?.pinned ?? false,
  };
}

function describe(info: AttachmentInfo): string {
  const parts = [info.blobId, STATE_NAMES[info.state], info.machineState];
  if (info.pinned) parts.push('pinned');
  if (info.lastError) parts.push(`last error: ${info.lastError.code}`);
  return parts.join('\t');
}

function summary(status: DaemonStatus): string {
  const { server, queues, attachments, lastSync, events } = status;
  const reach =
    server.reachable === null
      ? 'not contacted yet'
      : server.reachable
        ? 'reachable'
        : 'unreachable';
  return [
    `device       ${status.deviceId}`,
    `server       ${server.url ?? '(none)'} ${reach}${server.paused ? ', transfers paused' : ''}` +
      (server.lastError ? ` (last error: ${server.lastError})` : ''),
    `uploads      ${queues.uploadsRunning} running, ${queues.uploadsQueued} queued`,
    `downloads    ${queues.downloadsRunning} running, ${queues.downloadsQueued} queued`,
    `attachments  ${attachments.local} local, ${attachments.remote} remote, ${attachments.synced} synced, ` +
      `${attachments.failed} failed, ${attachments.rejected} rejected`,
    `last sync    ${lastSync ? `${new Date(lastSync.at).toISOString()} ${lastSync.ok ? 'ok' : 'failed'}` : 'never'}`,
    `events       seq ${events.latestSeq} (epoch ${events.epoch})`,
    ...status.watch.map(
      (folder) => `watching     ${folder.path}${folder.watching ? '' : ' (not watched: missing)'}`,
    ),
  ].join('\n');
}

/** Live progress bars per transfer plus a totals line, until interrupted. */
async function watchStatus(soledad: Soledad): Promise<void> {
  const bars = new cliProgress.MultiBar(
    {
      format: '{label} [{bar}] {percentage}% {value}/{total} bytes',
      hideCursor: true,
      noTTYOutput: true,
      notTTYSchedule: 1000,
      stream: process.stdout,
    },
    cliProgress.Presets.shades_classic,
  );
  const totals = bars.create(0, 0, { label: 'totals' }, { format: '{label}' });
  const transfers = new Map<string, cliProgress.SingleBar>();
  const refreshTotals = async () => {
    const { queues, attachments } = await soledad.status();
    totals.update(0, {
      label:
        `up ${queues.uploadsRunning} running/${queues.uploadsQueued} queued, ` +
        `down ${queues.downloadsRunning} running/${queues.downloadsQueued} queued, ` +
        `${attachments.synced} synced, ${attachments.local} local only, ${attachments.remote} remote only`,
    });
  };
  soledad.on('progress', (p) => {
    let bar = transfers.get(p.blobId);
    if (bar === undefined) {
      const label = `${p.direction === 'upload' ? 'up  ' : 'down'} ${p.blobId.slice(0, 12)}`;
      bar = bars.create(p.total, 0, { label });
      transfers.set(p.blobId, bar);
    }
    bar.setTotal(p.total);
    bar.update(p.bytes);
    if (p.bytes >= p.total) {
      bars.remove(bar);
      transfers.delete(p.blobId);
    }
  });
  soledad.on('event', () => void refreshTotals().catch(() => {}));
  await soledad.subscribe({ progress: true });
  await refreshTotals();
  const timer = setInterval(() => void refreshTotals().catch(() => {}), 2000);
  try {
    await untilInterrupted();
  } finally {
    clearInterval(timer);
    bars.stop();
  }
}

/** Resolves on SIGINT or SIGTERM. */
function untilInterrupted(): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      process.off('SIGINT', done);
      process.off('SIGTERM', done);
      resolve();
    };
    process.on('SIGINT', done);
    process.on('SIGTERM', done);
  });
}

function parseSeq(value: string): number {
  if (!/^\d+$/.test(value)) throw new InvalidArgumentError('expected a non-negative integer.');
  return Number(value);
}

function print(line: string): void {
  process.stdout.write(`${line}\n`);
}

function printJson(value: unknown): void {
  print(JSON.stringify(value, null, 2));
}
