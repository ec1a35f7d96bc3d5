// The queue conformance fixture: what every MessageQueue user relies on, run against one broker.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { ConfigParams, Descriptor, References } from 'pip-services3-commons-nodex';
import { MessageEnvelope } from 'pip-services3-messaging-nodex';

import { MqttConnection, MqttMessageQueue } from '../../src';
import { delay, type TestBroker, uniqueTopic, waitFor } from '../helpers/brokers';
import { testReferences } from '../helpers/components';
import { CollectingReceiver } from '../helpers/queues';

/** The two payload modes every case runs in. */
const MODES = [
    { label: 'raw', serialize: false },
    { label: 'envelope', serialize: true },
] as const;

/**
 * Registers the conformance suite for a broker.
 * @param label  the broker's name in the test titles.
 * @param start  starts a broker for the suite (stopped after it).
 * @param skip   a reason to skip, or false.
 * @param noSharedSubscriptions  a reason to skip the group test (the broker has no shared subscriptions), or false.
 */
export function describeQueueConformance(
    label: string, start: () => Promise<TestBroker>, skip: string | false, noSharedSubscriptions: string | false = false,
): void {
    describe(`MqttMessageQueue conformance on ${label}`, { skip, timeout: 120000 }, () => {
        let broker: TestBroker;
        const opened: { close(cid: string | null): Promise<void> }[] = [];

        before(async () => { broker = await start(); });
        after(async () => {
            for (const component of opened.reverse()) await component.close(null).catch(() => undefined);
            await broker?.stop();
        });

        /** An opened queue on its own topic (or `topic`), autosubscribed, QoS 1. */
        async function openQueue(serialize: boolean, topic: string, ...tuples: unknown[]): Promise<MqttMessageQueue> {
            const queue = new MqttMessageQueue(topic.replace(/\W/g, '_'));
            queue.configure(ConfigParams.fromTuples(
                'connection.uri', broker.url, 'topic', topic,
                'options.serialize_envelope', serialize, 'options.autosubscribe', true, 'options.qos', 1,
                ...tuples,
            ));
            queue.setReferences(testReferences().references);
            opened.push(queue);
            await queue.open(null);
            return queue;
        }

        for (const mode of MODES) {
            describe(`${mode.label} mode`, () => {
                it('send then receive', async () => {
                    const queue = await openQueue(mode.serialize, uniqueTopic('conf'));
                    const sent = new MessageEnvelope('cid-1', 'order', 'payload 1');
                    await queue.send(null, sent);
                    const received = await queue.receive(null, 10000);
                    assert.ok(received, 'a message arrives');
                    assert.equal(received.getMessageAsString(), 'payload 1');
                    if (mode.serialize) {
                        assert.equal(received.message_id, sent.message_id);
                        assert.equal(received.correlation_id, 'cid-1');
                        assert.equal(received.message_type, 'order');
                    }
                    assert.equal(await queue.readMessageCount(), 0);
                });

                it('receive then send', async () => {
                    const queue = await openQueue(mode.serialize, uniqueTopic('conf'));
                    const receiving = queue.receive(null, 10000);
                    await queue.send(null, new MessageEnvelope(null as unknown as string, 'order', 'late'));
                    const received = await receiving;
                    assert.equal(received?.getMessageAsString(), 'late');
                });

                it('send then peek, peek on empty', async () => {
                    const queue = await openQueue(mode.serialize, uniqueTopic('conf'));
                    assert.equal(await queue.peek(null), null, 'peek on an empty queue is null');
                    assert.deepEqual(await queue.peekBatch(null, 5), []);
                    await queue.send(null, new MessageEnvelope('c', 't', 'first'));
                    await queue.send(null, new MessageEnvelope('c', 't', 'second'));
                    await waitFor(async () => (await queue.readMessageCount()) === 2, 10000, 'two buffered messages');
                    assert.equal((await queue.peek(null))?.getMessageAsString(), 'first');
                    assert.deepEqual((await queue.peekBatch(null, 5)).map((m) => m.getMessageAsString()), ['first', 'second']);
                    assert.equal(await queue.readMessageCount(), 2, 'peek removes nothing');
                    assert.equal((await queue.receive(null, 0))?.getMessageAsString(), 'first');
                    await queue.clear(null);
                    assert.equal(await queue.peek(null), null);
                });

                it('on message (listen), in order', async () => {
                    const queue = await openQueue(mode.serialize, uniqueTopic('conf'));
                    const receiver = new CollectingReceiver();
                    queue.listen(null, receiver);
                    for (let i = 0; i < 20; i++) await queue.send(null, new MessageEnvelope('c', 't', `m${i}`));
                    await waitFor(() => receiver.messages.length === 20, 10000, '20 messages to the receiver');
                    assert.deepEqual(receiver.messages.map((m) => m.getMessageAsString()), Array.from({ length: 20 }, (_, i) => `m${i}`));
                    queue.endListen(null);
                    await queue.send(null, new MessageEnvelope('c', 't', 'after'));
                    assert.equal((await queue.receive(null, 10000))?.getMessageAsString(), 'after');
                    assert.equal(receiver.messages.length, 20, 'nothing delivered after endListen');
                });

                it('send as object', async () => {
                    const queue = await openQueue(mode.serialize, uniqueTopic('conf'));
                    await queue.sendAsObject(null, 'point', { x: 1, y: [2, 3] });
                    const received = await queue.receive(null, 10000);
                    assert.deepEqual(received?.getMessageAs(), { x: 1, y: [2, 3] });
                    if (mode.serialize) assert.equal(received?.message_type, 'point');
                });

                it('receive times out with null', async () => {
                    const queue = await openQueue(mode.serialize, uniqueTopic('conf'));
                    const started = Date.now();
                    assert.equal(await queue.receive(null, 200), null);
                    assert.ok(Date.now() - started >= 190, 'waited for the timeout');
                });

                it('listen delivers a buffered backlog first, in order, none lost', async () => {
                    const queue = await openQueue(mode.serialize, uniqueTopic('conf'));
                    for (let i = 0; i < 50; i++) await queue.send(null, new MessageEnvelope('c', 't', `b${i}`));
                    // Acknowledged only once settled: a broker sends no more than its in-flight window
                    // unacknowledged, and keeps the rest until then (Mosquitto's max_inflight_messages is
                    // 20, RabbitMQ's mqtt.prefetch 10).
                    await waitFor(async () => (await queue.readMessageCount()) >= 10, 10000, 'a backlog of 10 or more');
                    const receiver = new CollectingReceiver();
                    queue.listen(null, receiver);
                    const more = (async () => {
                        for (let i = 50; i < 60; i++) await queue.send(null, new MessageEnvelope('c', 't', `b${i}`));
                    })();
                    await more;
                    await waitFor(() => receiver.messages.length === 60, 10000, '60 messages to the receiver');
                    assert.deepEqual(receiver.messages.map((m) => m.getMessageAsString()), Array.from({ length: 60 }, (_, i) => `b${i}`));
                    assert.equal(await queue.readMessageCount(), 0);
                    queue.endListen(null);
                });

                it('close and reopen, then receive again', async () => {
                    const queue = await openQueue(mode.serialize, uniqueTopic('conf'));
                    await queue.close(null);
                    assert.equal(queue.isOpen(), false);
                    await queue.open(null);
                    assert.equal(queue.isOpen(), true);
                    await queue.send(null, new MessageEnvelope('c', 't', 'again'));
                    assert.equal((await queue.receive(null, 10000))?.getMessageAsString(), 'again');
                });

                it('payload bytes and metadata survive the trip', async () => {
                    const topic = uniqueTopic('conf');
                    const queue = await openQueue(mode.serialize, topic);
                    const bytes = Buffer.from([0, 1, 2, 0xff, 0xfe, 0x80, 0x7b, 0x22]);
                    const sent = new MessageEnvelope('cid-raw', 'blob', null);
                    sent.message = bytes;
                    const snapshot = (e: MessageEnvelope): unknown => ({ ...e, message: Buffer.from(e.message) });
                    const before = snapshot(sent);
                    await queue.send('cid-call', sent);
                    assert.deepEqual(snapshot(sent), before, 'the sent envelope is not modified');
                    const received = await queue.receive(null, 10000);
                    assert.ok(received);
                    assert.ok(Buffer.isBuffer(received.message));
                    assert.deepEqual(received.message, bytes);
                    assert.ok(received.message_id, 'a message id is always set');
                    if (mode.serialize) {
                        assert.equal(received.message_id, sent.message_id);
                        assert.equal(received.correlation_id, 'cid-raw');
                        assert.equal(received.message_type, 'blob');
                        assert.ok(received.sent_time instanceof Date);
                    } else {
                        assert.equal(received.message_type, topic, 'raw messages are typed by their topic');
                    }
                });
            });
        }

        it('two queues share one connection', async () => {
            const { logger } = testReferences();
            const connection = new MqttConnection();
            connection.configure(ConfigParams.fromTuples('connection.uri', broker.url));
            const refs = References.fromTuples(
                new Descriptor('pip-services', 'logger', 'capture', 'default', '1.0'), logger,
                new Descriptor('pip-services', 'connection', 'mqtt', 'default', '1.0'), connection,
            );
            connection.setReferences(refs);
            // The queues carry no connection configuration: only the referenced connection can work.
            const make = (topic: string): MqttMessageQueue => {
                const queue = new MqttMessageQueue(topic.replace(/\W/g, '_'));
                queue.configure(ConfigParams.fromTuples('topic', topic, 'options.autosubscribe', true, 'options.qos', 1));
                queue.setReferences(refs);
                opened.push(queue);
                return queue;
            };
            const a = make(uniqueTopic('shared-a'));
            const b = make(uniqueTopic('shared-b'));
            try {
                await a.open(null);
                await b.open(null);
                const client = connection.getConnection();
                assert.ok(client, 'the queue opened the shared connection');
                await a.send(null, new MessageEnvelope('c', 't', 'to a'));
                await b.send(null, new MessageEnvelope('c', 't', 'to b'));
                assert.equal((await a.receive(null, 10000))?.getMessageAsString(), 'to a');
                assert.equal((await b.receive(null, 10000))?.getMessageAsString(), 'to b');
                await a.close(null);
                assert.ok(connection.isOpen(), 'closing a queue leaves the shared connection open');
                assert.equal(connection.getConnection(), client);
                await b.send(null, new MessageEnvelope('c', 't', 'still'));
                assert.equal((await b.receive(null, 10000))?.getMessageAsString(), 'still');
            } finally {
                await a.close(null);
                await b.close(null);
                await connection.close(null);
            }
        });

        it('group consumers split the messages, none lost, none twice', { skip: noSharedSubscriptions }, async () => {
            const topic = uniqueTopic('work');
            const group = `g${Date.now().toString(36)}`;
            const workers = [
                await openQueue(false, topic, 'options.group', group),
                await openQueue(false, topic, 'options.group', group),
            ];
            const producer = new MqttMessageQueue('producer');
            producer.configure(ConfigParams.fromTuples('connection.uri', broker.url, 'topic', topic, 'options.qos', 1));
            opened.push(producer);
            await producer.open(null);
            const receivers = workers.map((worker) => {
                const receiver = new CollectingReceiver();
                worker.listen(null, receiver);
                return receiver;
            });
            const count = 200;
            for (let i = 0; i < count; i++) await producer.send(null, new MessageEnvelope('c', 'job', `job-${i}`));
            await waitFor(() => receivers[0].messages.length + receivers[1].messages.length >= count, 15000, `${count} jobs`);
            await delay(300); // a duplicate would arrive by now
            const seen = receivers.flatMap((r) => r.messages.map((m) => m.getMessageAsString()));
            assert.equal(seen.length, count, 'no job delivered twice');
            assert.equal(new Set(seen).size, count, 'every job delivered');
            for (const receiver of receivers) assert.ok(receiver.messages.length > 0, 'each consumer got a share');
        });
    });
}
