/**
 * Attachment bytes travel as binary WebSocket messages: a 4-byte big-endian stream id,
 * then the payload. Text messages are JSON-RPC; binary messages are only ever stream data.
 */
export const FRAME_HEADER_BYTES = 4;

/** Largest payload the sender puts in one binary message. */
export const MAX_FRAME_PAYLOAD = 1024 * 1024;

/** Initial and steady credit a receiver grants, in bytes. */
export const DEFAULT_STREAM_WINDOW = 8 * 1024 * 1024;
export const MIN_STREAM_WINDOW = 64 * 1024;
export const MAX_STREAM_WINDOW = 64 * 1024 * 1024;

/** Largest WebSocket message either end accepts (a JSON request or one data frame). */
export const MAX_MESSAGE_BYTES = 16 * 1024 * 1024;

/**
 * Bytes queued on a WebSocket past which a sender of stream data waits for the socket to
 * flush before it sends more, so several streams and events share one connection.
 */
export const SEND_QUEUE_HIGH_WATER = 2 * 1024 * 1024;

/** Builds one data frame; copies the payload once, behind the header. */
export function encodeFrame(streamId: number, payload: Uint8Array): Buffer {
  const frame = Buffer.allocUnsafe(FRAME_HEADER_BYTES + payload.byteLength);
  frame.writeUInt32BE(streamId, 0);
  frame.set(payload, FRAME_HEADER_BYTES);
  return frame;
}

/** Splits a data frame; undefined when it is too short to carry a stream id. */
export function decodeFrame(frame: Buffer): { streamId: number; payload: Buffer } | undefined {
  if (frame.byteLength < FRAME_HEADER_BYTES) return undefined;
  return { streamId: frame.readUInt32BE(0), payload: frame.subarray(FRAME_HEADER_BYTES) };
}
