import { INCOMING_NAMESPACE } from '../../wire/ids.js';
import type { BlobRef } from '../backends/blobs-backend.js';
import { type Plan, pickMethod } from '../plan.js';
import { checkQueryFields, readNamespace } from '../query-fields.js';
import type { ServerContext } from '../server-context.js';
import { storeBlob } from './store-blob.js';

/**
 * `PUT /incoming/{uuid}/{blob_id}` (services listener): a service delivers a blob into
 * the user's incoming box, `MX` unless `namespace` says otherwise, flagged `PENDING` and
 * counted against the recipient's quota.
 */
export function planIncoming(
  context: ServerContext,
  method: string,
  uuid: string,
  id: string,
  query: Map<string, string>,
): Plan {
  return pickMethod(method, {
    PUT: () => {
      checkQueryFields(query, ['namespace']);
      const namespace = query.has('namespace') ? readNamespace(query) : INCOMING_NAMESPACE;
      const ref: BlobRef = { user: uuid, namespace, id };
      return {
        route: '/incoming/:uuid/:blob_id',
        access: 'service',
        uuid,
        run: async (exchange, recipient) => {
          exchange.namespace = namespace;
          exchange.blobId = id;
          await storeBlob(context, exchange, ref, recipient, ['PENDING']);
        },
      };
    },
  });
}
