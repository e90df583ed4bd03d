export * from './auth.js';
export * from './errors.js';
export * from './flags.js';
export * from './ids.js';
