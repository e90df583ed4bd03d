/** A document change was based on a revision that is no longer the stored one. */
export class ConflictError extends Error {
  readonly code = 'conflict';
  readonly docId: string;
  /** The stored revision ('' when the document does not exist). */
  readonly currentRev: string;

  constructor(docId: string, currentRev: string, message: string) {
    super(message);
    this.name = 'ConflictError';
    this.docId = docId;
    this.currentRev = currentRev;
  }
}

/** The document to change does not exist. */
export class DocumentNotFoundError extends Error {
  readonly code = 'not_found';
  readonly docId: string;

  constructor(docId: string) {
    super(`document ${docId} does not exist`);
    this.name = 'DocumentNotFoundError';
    this.docId = docId;
  }
}

/** The document to delete is already a tombstone. */
export class AlreadyDeletedError extends Error {
  readonly code = 'already_deleted';
  readonly docId: string;

  constructor(docId: string) {
    super(`document ${docId} is already deleted`);
    this.name = 'AlreadyDeletedError';
    this.docId = docId;
  }
}

/** The store is closing or closed. */
export class StoreClosedError extends Error {
  readonly code = 'store_closed';

  constructor() {
    super('the store is closed');
    this.name = 'StoreClosedError';
  }
}
