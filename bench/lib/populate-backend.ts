// Child process of the server bench: writes many small blobs with random UUID ids straight
// through `FilesystemBackend` (no HTTP), while no server has the storage root open, then
// closes the backend cleanly. Run with a large UV_THREADPOOL_SIZE so that many fsyncs can
// be in flight. Arguments, as one JSON object: {root, user, namespace, count, size, inFlight}.
// Prints {"seconds": s} on stdout when done.
import { randomBytes, randomUUID } from 'node:crypto';
import { FilesystemBackend } from '../../server/backends/filesystem-backend.js';

interface PopulateArgs {
  root: string;
  user: string;
  namespace: string;
  count: number;
  size: number;
  inFlight: number;
}

async function* once(bytes: Buffer): AsyncGenerator<Buffer, void, undefined> {
  yield bytes;
}

async function main(): Promise<void> {
  const args = JSON.parse(process.argv[2] ?? '{}') as PopulateArgs;
  const bytes = randomBytes(args.size);
  const backend = await FilesystemBackend.open(args.root);
  try {
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < args.count) {
        next++;
        const ref = { user: args.user, namespace: args.namespace, id: randomUUID() };
        await backend.write(ref, once(bytes), {
          quota: Number.MAX_SAFE_INTEGER,
          maxSize: args.size,
          expectedSize: args.size,
        });
      }
    };
    const started = performance.now();
    await Promise.all(Array.from({ length: args.inFlight }, worker));
    const seconds = (performance.now() - started) / 1000;
    process.stdout.write(`${JSON.stringify({ seconds })}\n`);
  } finally {
    await backend.close();
  }
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error('populate-backend failed:', error);
    process.exit(1);
  },
);
