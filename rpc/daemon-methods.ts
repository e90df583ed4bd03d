import type { DaemonApi } from '../daemon/daemon-api.js';
import type { MethodName, ParamsOut, ResultOf } from './methods.js';
import type { RpcConnection } from './rpc-connection.js';

export type MethodHandlers = {
  [M in MethodName]: (
    params: ParamsOut<M>,
    connection: RpcConnection,
  ) => ResultOf<M> | Promise<ResultOf<M>>;
};

/** The daemon-side binding: what each method of the table does with a `DaemonApi`. */
export function daemonMethods(daemon: DaemonApi): MethodHandlers {
  return {
    'doc.create': (p) => daemon.createDoc(p.content, p.id),
    'doc.get': async (p) => (await daemon.getDoc(p.id)) ?? null,
    'doc.put': (p) => daemon.putDoc(p.id, p.content, p.rev),
    'doc.delete': (p) => daemon.deleteDoc(p.id, p.rev),
    'doc.list': (p) => daemon.listDocs({ includeDeleted: p.includeDeleted }),

    'attachment.put': (p, connection) =>
      connection.receiveUpload(p.streamId, (source) => daemon.putAttachment(p.docId, source)),
    'attachment.get': (p, connection) =>
      connection.sendDownload(p.streamId, p.window, async () => {
        const source = await daemon.openAttachment(p.blobId);
        try {
          const info = await daemon.getAttachmentInfo(p.blobId);
          return { source, size: info?.plaintextSize ?? null };
        } catch (err) {
          source.destroy();
          throw err;
        }
      }),
    'attachment.info': async (p) => (await daemon.getAttachmentInfo(p.blobId)) ?? null,
    'attachment.upload': (p) => daemon.uploadAttachment(p.blobId),
    'attachment.download': (p) => daemon.downloadAttachment(p.blobId),
    'attachment.evict': (p) => daemon.evictAttachment(p.blobId),
    'attachment.pin': (p) => daemon.pinAttachment(p.blobId),
    'attachment.unpin': (p) => daemon.unpinAttachment(p.blobId),
    'attachment.delete': (p) => daemon.deleteAttachment(p.docId, p.rev),
    'attachment.list': () => daemon.listAttachments(),

    'sync.run': () => daemon.sync(),
    'daemon.status': () => daemon.status(),

    'events.subscribe': (p, connection) => connection.subscribe(p),
    'events.unsubscribe': (_p, connection) => connection.unsubscribe(),
    'events.after': (p) => daemon.readEventsAfter(p.after, p.limit),

    'stream.credit': (p, connection) => connection.creditStream(p.streamId, p.limit),
    'stream.end': (p, connection) => connection.endStream(p.streamId),
    'stream.cancel': (p, connection) => connection.cancelStream(p.streamId, p.reason),
  };
}
