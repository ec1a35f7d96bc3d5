import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { BadRequestException } from 'pip-services3-commons-nodex';
import { MessageEnvelope } from 'pip-services3-messaging-nodex';

import { MqttErrorCode } from '../../src';
import { decodeEnvelope, encodeEnvelope } from '../../src/queues/MqttEnvelopeCodec';

function envelope(correlationId: string | null, type: string | null, message: Buffer | string | null): MessageEnvelope {
    const e = new MessageEnvelope(correlationId as string, type as string, null);
    if (Buffer.isBuffer(message)) e.message = message;
    else if (message != null) e.setMessageAsString(message);
    return e;
}

describe('MqttEnvelopeCodec', () => {
    it('raw mode sends the message bytes exactly, the same Buffer', () => {
        const bytes = Buffer.from([0, 0xff, 0x10, 0x7b]);
        const e = envelope('c', 't', bytes);
        assert.equal(encodeEnvelope(null, e, false), bytes);
        assert.deepEqual(encodeEnvelope(null, envelope('c', 't', 'héllo'), false), Buffer.from('héllo', 'utf8'));
        assert.deepEqual(encodeEnvelope(null, envelope('c', 't', null), false), Buffer.alloc(0));
    });

    it('raw mode receives the same Buffer, typed by topic, with a message id', () => {
        const payload = Buffer.from([1, 2, 3]);
        const a = decodeEnvelope('sensors/a', payload, false);
        const b = decodeEnvelope('sensors/a', payload, false);
        assert.ok(a instanceof MessageEnvelope && b instanceof MessageEnvelope);
        assert.equal(a.message, payload, 'the very Buffer MQTT.js delivered');
        assert.equal(a.message_type, 'sensors/a');
        assert.equal(a.correlation_id, null);
        assert.ok(a.message_id && a.message_id !== b.message_id, 'a fresh message id each time');
        assert.ok(a.sent_time instanceof Date);
    });

    it('envelope mode writes the JSON form the other ports read', () => {
        const e = envelope('cid', 'order.created', Buffer.from([0xde, 0xad]));
        e.sent_time = new Date('2024-01-02T03:04:05.678Z');
        const json: unknown = JSON.parse(encodeEnvelope(null, e, true).toString('utf8'));
        assert.deepEqual(json, {
            message_id: e.message_id,
            correlation_id: 'cid',
            message_type: 'order.created',
            sent_time: '2024-01-02T03:04:05.678Z',
            message: '3q0=',
        });
    });

    it('envelope mode fills what the envelope lacks without modifying it', () => {
        const e = envelope(null, null, null);
        e.message_id = null as unknown as string;
        const before = { ...e };
        const json = JSON.parse(encodeEnvelope('call-cid', e, true).toString('utf8')) as Record<string, unknown>;
        assert.deepEqual({ ...e }, before, 'the envelope is unchanged');
        assert.equal(typeof json.message_id, 'string');
        assert.ok((json.message_id as string).length > 0);
        assert.equal(json.correlation_id, 'call-cid', 'the call correlation id stands in');
        assert.equal(json.message, null);
        assert.ok(!isNaN(Date.parse(json.sent_time as string)));
    });

    it('reads envelopes written by other ports (Go and .NET time formats)', () => {
        const payload = Buffer.from(JSON.stringify({
            message_id: 'm-1', correlation_id: 'c-1', message_type: 'note',
            sent_time: '2021-05-05T10:00:00.123456789Z', message: Buffer.from('hi').toString('base64'),
        }));
        const e = decodeEnvelope('t', payload, true);
        assert.ok(e instanceof MessageEnvelope);
        assert.equal(e.message_id, 'm-1');
        assert.equal(e.correlation_id, 'c-1');
        assert.equal(e.message_type, 'note');
        assert.equal(e.sent_time.toISOString(), '2021-05-05T10:00:00.123Z');
        assert.equal(e.getMessageAsString(), 'hi');

        const dotnet = decodeEnvelope('t', Buffer.from('{"message_id":"m","sent_time":"2021-05-05T10:00:00.1234567+03:00","message":null}'), true);
        assert.ok(dotnet instanceof MessageEnvelope);
        assert.equal(dotnet.sent_time.toISOString(), '2021-05-05T07:00:00.123Z');
        assert.equal(dotnet.message, null);
        assert.equal(dotnet.correlation_id, null);
    });

    it('gives a message id to an envelope that arrives without one', () => {
        const e = decodeEnvelope('t', Buffer.from('{"message":"aGk="}'), true);
        assert.ok(e instanceof MessageEnvelope);
        assert.ok(e.message_id);
    });

    it('takes base64 with or without padding, and refuses lengths and padding base64 cannot have', () => {
        for (const [message, bytes] of [['', ''], ['aGk=', 'hi'], ['aGk', 'hi'], ['aA==', 'h'], ['aA', 'h'], ['aGVsbG8h', 'hello!'], ['+/+/', '\u00fb\u00ff\u00bf']] as const) {
            const e = decodeEnvelope('t', Buffer.from(JSON.stringify({ message: message })), true);
            assert.ok(e instanceof MessageEnvelope, message);
            assert.equal(e.message.toString('latin1'), bytes, message);
        }
        // Not what an encoder writes (trailing bits set), yet base64: taken through the slow path.
        for (const [message, bytes] of [['aB==', 'h'], ['aGl=', 'hi'], ['aGl', 'hi']] as const) {
            const e = decodeEnvelope('t', Buffer.from(JSON.stringify({ message })), true);
            assert.ok(e instanceof MessageEnvelope, message);
            assert.equal(e.message.toString('latin1'), bytes, message);
        }
        for (const message of ['a', 'aGk==', 'aG=k', 'aGVsb', '=', 'aA=', 'aGk=aGk=', 'aGk-', 'aGk_', 'aG k']) {
            assert.equal(decodeEnvelope('t', Buffer.from(JSON.stringify({ message })), true), 'message is not base64', message);
        }
    });

    it('names what is wrong with a malformed envelope, without its content', () => {
        const cases: [string, RegExp][] = [
            ['not json {', /not JSON/],
            ['[1,2]', /not a JSON object/],
            ['null', /not a JSON object/],
            ['"text"', /not a JSON object/],
            ['{"message_id": 5}', /message_id is not a string/],
            ['{"message": {"a": 1}}', /message is not a string/],
            ['{"message": "not base64!"}', /message is not base64/],
            ['{"sent_time": "yesterday"}', /sent_time is not a date/],
        ];
        for (const [payload, reason] of cases) {
            const result = decodeEnvelope('t', Buffer.from(payload), true);
            assert.equal(typeof result, 'string', payload);
            assert.match(result as string, reason, payload);
        }
    });

    it('refuses an envelope it cannot send', () => {
        for (const bad of [null, undefined, 'text', Object.assign(envelope('c', 't', null), { message: 42 })]) {
            for (const serialize of [false, true]) {
                assert.throws(() => encodeEnvelope('cid', bad as MessageEnvelope, serialize), (err: BadRequestException) => {
                    assert.ok(err instanceof BadRequestException);
                    assert.equal(err.code, MqttErrorCode.InvalidEnvelope);
                    assert.equal(err.correlation_id, 'cid');
                    return true;
                });
            }
        }
    });
});
