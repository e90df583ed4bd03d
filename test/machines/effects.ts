import { fromPromise } from 'xstate';
import {
  type AttachmentOperation,
  attachmentMachine,
  type RemoveInput,
  type TransferInput,
} from '../../machines/index.js';

/** One invocation of a side effect, settled by the test. */
export interface Call<TInput> {
  input: TInput;
  signal: AbortSignal;
  resolve(): void;
  reject(code: string, message?: string): void;
}

/** Calls per operation, oldest first. */
export interface Calls {
  upload: Call<TransferInput>[];
  download: Call<TransferInput>[];
  evict: Call<TransferInput>[];
  remove: Call<RemoveInput>[];
}

function recorder<TInput>(calls: Call<TInput>[]) {
  return fromPromise<void, TInput>(
    ({ input, signal }) =>
      new Promise<void>((resolve, reject) => {
        calls.push({
          input,
          signal,
          resolve: () => resolve(),
          reject: (code, message = code) => reject(Object.assign(new Error(message), { code })),
        });
      }),
  );
}

/**
 * The attachment machine with every side effect recorded and left pending until the test
 * resolves or rejects it.
 */
export function recordedMachine() {
  const calls: Calls = { upload: [], download: [], evict: [], remove: [] };
  const machine = attachmentMachine.provide({
    actors: {
      upload: recorder(calls.upload),
      download: recorder(calls.download),
      evict: recorder(calls.evict),
      remove: recorder(calls.remove),
    },
  });
  const last = <T>(list: Call<T>[], op: AttachmentOperation): Call<T> => {
    const call = list.at(-1);
    if (call === undefined) throw new Error(`no ${op} call recorded`);
    return call;
  };
  return {
    machine,
    calls,
    lastUpload: () => last(calls.upload, 'upload'),
    lastDownload: () => last(calls.download, 'download'),
    lastEvict: () => last(calls.evict, 'evict'),
    lastRemove: () => last(calls.remove, 'remove'),
  };
}

export const INPUT = {
  blobId: 'blob-1',
  docId: 'doc-1',
  namespace: 'default',
  size: 1234,
} as const;
