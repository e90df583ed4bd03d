export * from './attachment-counts.js';
export * from './errors.js';
export type { EventLogState } from './event-log.js';
export * from './records.js';
export * from './store.js';
export { Transaction } from './transaction.js';
