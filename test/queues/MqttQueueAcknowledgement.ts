// The acknowledgement fixture: at-least-once processing, run against one broker. A QoS 1 message is
// acknowledged to the broker once settled (complete(), abandon(), moveToDeadLetter(), a listener's
// receiver done), abandon() makes it available again, dead letters go to their topic, and a
// consumer whose connection drops unsettled gets its messages again.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';

import { ConfigException, ConfigParams } from 'pip-services3-commons-nodex';
import { type IMessageQueue, MessageEnvelope } from 'pip-services3-messaging-nodex';

import { MqttErrorCode, MqttMessageQueue } from '../../src';
import { type TestBroker, uniqueTopic, waitFor } from '../helpers/brokers';
import { dropConnection, RecordingListener } from '../helpers/components';
import { type Fixture, fixture } from '../helpers/fixture';

/** A queue on `topic` at QoS 1, autosubscribed, with a connection of its own and a persistent session. */
function consumer(f: Fixture, url: string, topic: string, ...tuples: unknown[]): MqttMessageQueue {
    const queue = new MqttMessageQueue(topic.replace(/\W/g, '_'));
    queue.configure(ConfigParams.fromTuples('connection.uri', url, 'topic', topic, 'options.qos', 1, 'options.autosubscribe', true,
        'options.serialize_envelope', true, 'client_id', `ack${randomBytes(6).toString('hex')}`, 'options.clean_session', false,
        'options.reconnect_timeout', 100, ...tuples));
    return f.closing(queue);
}

/** The connection under a queue of its own, to cut it as a crash would. */
function connectionOf(queue: MqttMessageQueue): Parameters<typeof dropConnection>[0] {
    return (queue as unknown as { _connection: Parameters<typeof dropConnection>[0] })._connection;
}

/** A QoS 1 round trip on the queue's connection: what it wrote before (PUBACKs) has reached the broker. */
async function flushed(queue: MqttMessageQueue): Promise<void> {
    await connectionOf(queue).publish(uniqueTopic('q-flush'), 'x', { qos: 1 });
}

/**
 * Registers the acknowledgement fixture for a broker.
 * @param label the broker's name in the test titles.
 * @param start starts a broker for the suite (stopped after it).
 * @param skip  a reason to skip, or false.
 */
export function describeQueueAcknowledgement(label: string, start: () => Promise<TestBroker>, skip: string | false): void {
    describe(`MqttMessageQueue acknowledgement after processing on ${label}`, { skip, timeout: 90000 }, () => {
        let broker: TestBroker;
        before(async () => { broker = await start(); });
        after(async () => { await broker?.stop(); });

        it('receive then complete: the message loses its reference, and is not sent again after a loss', async (t) => {
            const f = fixture(t);
            const topic = uniqueTopic('q-complete');
            const queue = consumer(f, broker.url, topic);
            await queue.open(null);
            await queue.send(null, new MessageEnvelope('c', 'job', 'one'));
            const message = await queue.receive(null, 5000);
            assert.equal(message?.getMessageAsString(), 'one');
            assert.notEqual(message.getReference(), null, 'a reference until it is settled');
            await queue.complete(message);
            assert.equal(message.getReference(), null, 'no reference after complete()');
            await queue.send(null, new MessageEnvelope('c', 'job', 'probe'));
            const probe = await queue.receive(null, 5000);
            assert.equal(probe?.getMessageAsString(), 'probe');
            await queue.complete(probe);
            await flushed(queue);
            await dropConnection(connectionOf(queue));
            await waitFor(() => connectionOf(queue).isConnected(), 10000, 'the reconnect');
            assert.equal((await queue.receive(null, 1000))?.getMessageAsString() ?? null, null, 'completed: not sent again');
        });

        it('a received message not completed comes again after the connection is lost (a crash, as the broker sees it)', async (t) => {
            const f = fixture(t);
            const topic = uniqueTopic('q-again');
            const queue = consumer(f, broker.url, topic);
            await queue.open(null);
            await queue.send(null, new MessageEnvelope('c', 'job', 'unfinished'));
            const first = await queue.receive(null, 5000);
            assert.equal(first?.getMessageAsString(), 'unfinished');
            await dropConnection(connectionOf(queue));
            const again = await queue.receive(null, 10000);
            assert.equal(again?.getMessageAsString(), 'unfinished');
            assert.equal(again.message_id, first.message_id);
            await queue.complete(again);
        });

        it('with options.acknowledge on_arrival a received message is acknowledged at once: not sent again', async (t) => {
            const f = fixture(t);
            const topic = uniqueTopic('q-arrival');
            const queue = consumer(f, broker.url, topic, 'options.acknowledge', 'on_arrival');
            await queue.open(null);
            await queue.send(null, new MessageEnvelope('c', 'job', 'taken'));
            assert.equal((await queue.receive(null, 5000))?.getMessageAsString(), 'taken');
            await queue.send(null, new MessageEnvelope('c', 'job', 'probe'));
            assert.equal((await queue.receive(null, 5000))?.getMessageAsString(), 'probe');
            await flushed(queue);
            await dropConnection(connectionOf(queue));
            await waitFor(() => connectionOf(queue).isConnected(), 10000, 'the reconnect');
            assert.equal((await queue.receive(null, 1000))?.getMessageAsString() ?? null, null);
        });

        it('abandon makes the message available again, with its message_id, after those already on their way', async (t) => {
            const f = fixture(t);
            const topic = uniqueTopic('q-abandon');
            const queue = consumer(f, broker.url, topic);
            await queue.open(null);
            const sent = new MessageEnvelope('c', 'job', 'retry-me');
            await queue.send(null, sent);
            const first = await queue.receive(null, 5000);
            assert.equal(first?.message_id, sent.message_id);
            await queue.send(null, new MessageEnvelope('c', 'job', 'next'));
            await queue.abandon(first);
            assert.equal(first.getReference(), null);
            const next = await queue.receive(null, 5000);
            assert.equal(next?.getMessageAsString(), 'next');
            await queue.complete(next);
            const again = await queue.receive(null, 5000);
            assert.equal(again?.getMessageAsString(), 'retry-me');
            assert.equal(again.message_id, sent.message_id);
            await queue.complete(again);
            // The original was acknowledged when abandoned: only the copy could come again, and it was completed.
            await flushed(queue);
            await dropConnection(connectionOf(queue));
            await waitFor(() => connectionOf(queue).isConnected(), 10000, 'the reconnect');
            assert.equal((await queue.receive(null, 1000))?.getMessageAsString() ?? null, null);
        });

        it('moveToDeadLetter publishes to options.dead_letter_topic and settles; without one it is a typed error', async (t) => {
            const f = fixture(t);
            const topic = uniqueTopic('q-dead');
            const deadTopic = `${topic}/dead`;
            const dead = new RecordingListener();
            const watcher = f.connection(broker.url);
            await watcher.open(null);
            await watcher.subscribe(deadTopic, { qos: 1 }, dead);
            const queue = consumer(f, broker.url, topic, 'options.dead_letter_topic', deadTopic);
            await queue.open(null);
            assert.equal(queue.getCapabilities().canDeadLetter, true);
            await queue.send(null, new MessageEnvelope('c', 'job', 'poison'));
            const message = await queue.receive(null, 5000);
            await queue.moveToDeadLetter(message);
            await waitFor(() => dead.received.length === 1, 5000, 'the dead letter');
            assert.equal((JSON.parse(dead.received[0].data.toString()) as { message_id: string }).message_id, message.message_id);
            assert.equal(message.getReference(), null);

            const plain = consumer(f, broker.url, uniqueTopic('q-nodead'));
            await plain.open(null);
            assert.equal(plain.getCapabilities().canDeadLetter, false);
            await plain.send(null, new MessageEnvelope('c', 'job', 'x'));
            const other = await plain.receive(null, 5000);
            await assert.rejects(plain.moveToDeadLetter(other), (err: ConfigException) => {
                assert.ok(err instanceof ConfigException);
                assert.equal(err.code, MqttErrorCode.NoDeadLetterTopic);
                assert.equal(err.details.getAsString('key'), 'options.dead_letter_topic');
                return true;
            });
            await plain.complete(other);
        });

        it('listen acknowledges a message once its receiver is done: one cut before that brings it again', async (t) => {
            const f = fixture(t);
            const topic = uniqueTopic('q-listen');
            const queue = consumer(f, broker.url, topic);
            await queue.open(null);
            const seen: string[] = [];
            let finish!: () => void;
            const working = new Promise<void>((resolve) => { finish = resolve; });
            queue.listen(null, {
                receiveMessage: async (message: MessageEnvelope, _queue: IMessageQueue): Promise<void> => {
                    seen.push(message.getMessageAsString());
                    if (seen.length === 1) await working;
                },
            });
            await queue.send(null, new MessageEnvelope('c', 'job', 'long-job'));
            await waitFor(() => seen.length === 1, 5000, 'the job');
            await dropConnection(connectionOf(queue));
            finish();
            await waitFor(() => seen.length === 2, 10000, 'the job again: it was not done when the connection went');
            assert.deepEqual(seen, ['long-job', 'long-job']);
            await queue.send(null, new MessageEnvelope('c', 'job', 'short'));
            await waitFor(() => seen.length === 3, 5000, 'the next job');
            queue.endListen(null);
        });

        it('QoS 0: complete drops the reference, abandon publishes the message again', async (t) => {
            const f = fixture(t);
            const topic = uniqueTopic('q-qos0');
            const queue = consumer(f, broker.url, topic, 'options.qos', 0);
            await queue.open(null);
            await queue.send(null, new MessageEnvelope('c', 'job', 'zero'));
            const message = await queue.receive(null, 5000);
            await queue.abandon(message);
            const again = await queue.receive(null, 5000);
            assert.equal(again?.message_id, message.message_id);
            await queue.complete(again);
            assert.equal(again.getReference(), null);
        });
    });
}
