// Fixed test vectors of the blob envelope, format version 1 (docs/envelope-format.md).
// Generated once and committed: a change to any byte here is a change of the format.

export const VECTOR_SECRET_HEX = '000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f';
export const VECTOR_SALT_HEX = 'a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf';

export interface EnvelopeVector {
  name: string;
  blobId: string;
  chunkSize: number;
  /** UTF-8 text. */
  plaintext: string;
  /** The whole envelope, hex, wrapped at 64 digits. */
  envelope: string[];
}

export const ENVELOPE_VECTORS: EnvelopeVector[] = [
  {
    name: 'empty plaintext, default chunk size',
    blobId: 'vector-empty',
    chunkSize: 65536,
    plaintext: '',
    envelope: [
      '133701010100010000000c766563746f722d656d707479a0a1a2a3a4a5a6a7a8',
      'a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf772db490284e9360bb',
      '56ae1ac4d328fc',
    ],
  },
  {
    name: 'one short chunk',
    blobId: 'vector-short',
    chunkSize: 16,
    plaintext: 'Soledad',
    envelope: [
      '133701010100000010000c766563746f722d73686f7274a0a1a2a3a4a5a6a7a8',
      'a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebfd2463ee7291b71ee58',
      '44cd11bdb86adfe2db653ae1365e',
    ],
  },
  {
    name: 'exactly three full chunks',
    blobId: 'vector-full',
    chunkSize: 16,
    plaintext: 'Attachments are immutable blobs; keys stay home.',
    envelope: [
      '133701010100000010000b766563746f722d66756c6ca0a1a2a3a4a5a6a7a8a9',
      'aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebfecf9f10c57861ee758d2',
      '575c8fe3bd8a143a70c8c58b6d89064c18fd160844b22b9e1f1f1d2088acf039',
      'f708fcdb43396f9e01d089aa1bdc7ca8fd3cfeaf93f341c0161dafbcd216d669',
      'abc2cad84f9f73f43731364d04efd8426ce289e0a6ec',
    ],
  },
  {
    name: 'four chunks, the last of two bytes',
    blobId: 'vector-partial',
    chunkSize: 16,
    plaintext: 'The server stores only ciphertext, chunk by chunk.',
    envelope: [
      '133701010100000010000e766563746f722d7061727469616ca0a1a2a3a4a5a6',
      'a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf5bf72cd37bff36',
      'b7e1e8dc21299d07b23a734776af459756383202ae62a72181928c55023db054',
      'cda5c60189b1f31bbd3b6b96097fd9ae434223cd758ccfc528b55d39488b6dda',
      'a4160b6c35eb50545231e2bdf6b9ef99380844c106f98e75dd26142720d99880',
      '3f6de0630f0568ab2ab06f',
    ],
  },
  {
    name: 'UUID blob id, default chunk size',
    blobId: '9d3c1f2e-7b6a-4c5d-8e9f-0a1b2c3d4e5f',
    chunkSize: 65536,
    plaintext: 'hackers.txt\n',
    envelope: [
      '133701010100010000002439643363316632652d376236612d346335642d3865',
      '39662d306131623263336434653566a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0',
      'b1b2b3b4b5b6b7b8b9babbbcbdbebfeea8cc060c65f9216e5aba268023573131',
      '54eacbbad682a6a2e4c4db',
    ],
  },
];
