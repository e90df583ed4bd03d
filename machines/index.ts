export * from './attachment-failure.js';
export * from './attachment-machine.js';
export * from './attachment-restore.js';
export * from './attachment-state.js';
