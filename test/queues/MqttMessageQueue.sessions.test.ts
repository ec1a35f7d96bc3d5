import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';

import { ConfigParams } from 'pip-services3-commons-nodex';
import { MessageEnvelope } from 'pip-services3-messaging-nodex';

import { MqttMessageQueue } from '../../src';
import { uniqueTopic } from '../helpers/brokers';
import { EACH_BROKER, fixture } from '../helpers/fixture';

function queue(url: string, topic: string, ...tuples: unknown[]): MqttMessageQueue {
    const q = new MqttMessageQueue(topic);
    q.configure(ConfigParams.fromTuples('connection.uri', url, 'topic', topic, 'options.qos', 1, 'options.autosubscribe', true, ...tuples));
    return q;
}

for (const { kind, skip } of EACH_BROKER) {
    describe(`MqttMessageQueue with a persistent session (${kind})`, { skip, timeout: 60000 }, () => {
        for (const clean of [false, true]) {
            it(`${clean ? 'does not get' : 'gets'} what was sent while it was closed, with clean_session ${clean}`, async (t) => {
                const f = fixture(t);
                const broker = await f.broker(kind);
                const topic = uniqueTopic('persistent-queue');
                const consumer = f.closing(queue(broker.url, topic, 'client_id', `q${randomBytes(6).toString('hex')}`, 'options.clean_session', clean));
                const producer = f.closing(queue(broker.url, topic, 'options.autosubscribe', false));
                await consumer.open(null);
                await producer.open(null);
                await producer.send(null, new MessageEnvelope('c1', 'first', 'before'));
                const before = await consumer.receive(null, 5000);
                assert.equal(before?.getMessageAsString(), 'before');
                // Completed: acknowledged, so the broker does not send it again (see the test below).
                await consumer.complete(before);
                await consumer.close(null);

                for (let i = 1; i <= 5; i++) await producer.send(null, new MessageEnvelope('c1', 'job', `while-closed-${i}`));
                await consumer.open(null);
                await producer.send(null, new MessageEnvelope('c1', 'job', 'after'));
                const got: string[] = [];
                for (;;) {
                    const message = await consumer.receive(null, 5000);
                    assert.ok(message, `timed out after ${got.join(', ')}`);
                    got.push(message.getMessageAsString());
                    if (got.at(-1) === 'after') break;
                }
                const kept = clean ? [] : [1, 2, 3, 4, 5].map((i) => `while-closed-${i}`);
                assert.deepEqual(got, [...kept, 'after']);
            });
        }
    });
}
