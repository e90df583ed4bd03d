import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BlobsError } from '../../server/errors.js';
import {
  checkQueryFields,
  readBoolean,
  readDirection,
  readFlag,
  readNamespace,
  readOrder,
} from '../../server/query-fields.js';
import { parseQuery, parseRequestTarget } from '../../server/request-target.js';

function isInvalid(error: unknown): boolean {
  return error instanceof BlobsError && error.code === 'invalid_request';
}

describe('parseRequestTarget', () => {
  it('splits and decodes path segments, keeping a trailing slash as an empty segment', () => {
    assert.deepEqual(parseRequestTarget('/').segments, []);
    assert.deepEqual(parseRequestTarget('/blobs/u1').segments, ['blobs', 'u1']);
    assert.deepEqual(parseRequestTarget('/blobs/u1/').segments, ['blobs', 'u1', '']);
    assert.deepEqual(parseRequestTarget('/blobs/%41b').segments, ['blobs', 'Ab']);
  });

  it('decodes encoded dots and slashes into segments for the routes to refuse', () => {
    assert.deepEqual(parseRequestTarget('/blobs/%2e%2e/a%2Fb').segments, ['blobs', '..', 'a/b']);
  });

  it('takes the path of an absolute-form target', () => {
    const target = parseRequestTarget('http://example.org:2424/blobs/u1?namespace=x');
    assert.deepEqual(target.segments, ['blobs', 'u1']);
    assert.equal(target.query.get('namespace'), 'x');
  });

  it('refuses malformed percent-encoding, fragments and targets that are not paths', () => {
    for (const url of ['/blobs/%zz', '/blobs/%', '/blobs/x#frag', '*', 'blobs/x']) {
      assert.throws(() => parseRequestTarget(url), isInvalid, url);
    }
  });
});

describe('parseQuery', () => {
  it('decodes + as a space and %2B as a plus', () => {
    assert.equal(parseQuery('order_by=+date').get('order_by'), ' date');
    assert.equal(parseQuery('order_by=%2Bdate').get('order_by'), '+date');
  });

  it('gives a field without = an empty value and skips empty parts', () => {
    const query = parseQuery('a&&b=1&');
    assert.deepEqual(
      [...query],
      [
        ['a', ''],
        ['b', '1'],
      ],
    );
  });

  it('refuses a repeated field, also when spelled differently', () => {
    assert.throws(() => parseQuery('a=1&a=2'), isInvalid);
    assert.throws(() => parseQuery('a=1&%61=1'), isInvalid);
  });
});

describe('query fields', () => {
  const q = (text: string) => parseQuery(text);

  it('refuses fields a route does not take', () => {
    assert.throws(() => checkQueryFields(q('namespace=a&x=1'), ['namespace']), isInvalid);
    checkQueryFields(q('namespace=a'), ['namespace']);
  });

  it('defaults the namespace and validates it as an id', () => {
    assert.equal(readNamespace(q('')), 'default');
    assert.equal(readNamespace(q('namespace=MX')), 'MX');
    for (const bad of [
      'namespace=',
      'namespace=..',
      'namespace=a%2Fb',
      `namespace=${'n'.repeat(129)}`,
    ]) {
      assert.throws(() => readNamespace(q(bad)), isInvalid, bad);
    }
  });

  it('reads booleans as true or false only', () => {
    assert.equal(readBoolean(q(''), 'deleted'), false);
    assert.equal(readBoolean(q('deleted=true'), 'deleted'), true);
    assert.equal(readBoolean(q('deleted=false'), 'deleted'), false);
    for (const bad of ['deleted=1', 'deleted=TRUE', 'deleted=', 'deleted']) {
      assert.throws(() => readBoolean(q(bad), 'deleted'), isInvalid, bad);
    }
  });

  it('reads order_by in every spelling of +date', () => {
    assert.equal(readOrder(q('')), undefined);
    assert.equal(readOrder(q('order_by=date')), 'date');
    assert.equal(readOrder(q('order_by=%2Bdate')), '+date');
    assert.equal(readOrder(q('order_by=+date')), '+date');
    assert.equal(readOrder(q('order_by=-date')), '-date');
    assert.throws(() => readOrder(q('order_by=size')), isInvalid);
  });

  it('reads known flags and directions only', () => {
    assert.equal(readFlag(q('filter_flag=PENDING'), 'filter_flag'), 'PENDING');
    assert.throws(() => readFlag(q('filter_flag=DONE'), 'filter_flag'), isInvalid);
    assert.equal(readDirection(q('direction=upload')), 'upload');
    assert.throws(() => readDirection(q('')), isInvalid);
    assert.throws(() => readDirection(q('direction=both')), isInvalid);
  });
});
