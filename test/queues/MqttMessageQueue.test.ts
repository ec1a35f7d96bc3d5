import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';

import type { IClientSubscribeOptions } from 'mqtt';
import {
    BadRequestException, ConfigException, ConfigParams, Descriptor, InvalidStateException, References,
} from 'pip-services3-commons-nodex';
import { LogLevel } from 'pip-services3-components-nodex';
import { MessageEnvelope, type IMessageQueue, type IMessageReceiver } from 'pip-services3-messaging-nodex';

import { type IMqttMessageListener, MqttConnection, MqttErrorCode, MqttMessageQueue } from '../../src';
import { type AedesTestBroker, delay, uniqueTopic, waitFor } from '../helpers/brokers';
import { testReferences } from '../helpers/components';
import { fixture, suiteFixture } from '../helpers/fixture';
import { CONNECTION, COUNTERS, LOGGER, QueueFixture } from '../helpers/queues';

/** A real connection that counts the subscribe() calls made on it. */
class CountingConnection extends MqttConnection {
    public subscribeCalls = 0;

    public override subscribe(topic: string, options: IClientSubscribeOptions | null, listener: IMqttMessageListener): Promise<void> {
        this.subscribeCalls++;
        return super.subscribe(topic, options, listener);
    }
}


describe('MqttMessageQueue', { timeout: 60000 }, () => {
    const suite = suiteFixture();
    let broker: AedesTestBroker;
    before(async () => { broker = await suite.aedes(); });

    /** A shared connection and references holding it, a capturing logger and recording counters. */
    function sharedSetup(connection: MqttConnection = new CountingConnection()) {
        const { logger, counters } = testReferences();
        connection.configure(ConfigParams.fromTuples('connection.uri', broker.url));
        const references = References.fromTuples(LOGGER, logger, COUNTERS, counters, CONNECTION, connection);
        connection.setReferences(references);
        return { connection, references, logger, counters };
    }

    function queueOn(references: References, topic: string, ...tuples: unknown[]): MqttMessageQueue {
        const queue = new MqttMessageQueue('q');
        queue.configure(ConfigParams.fromTuples('topic', topic, ...tuples));
        queue.setReferences(references);
        return queue;
    }

    /** Runs `body` with a queue on `topic`, opened over a shared connection; closes both afterwards. */
    async function withQueue(
        topic: string, tuples: unknown[],
        body: (queue: MqttMessageQueue, setup: ReturnType<typeof sharedSetup>) => Promise<void>,
    ): Promise<void> {
        const setup = sharedSetup();
        const queue = queueOn(setup.references, topic, ...tuples);
        try {
            await queue.open(null);
            await body(queue, setup);
        } finally {
            await queue.close(null);
            await setup.connection.close(null);
        }
    }

    it('states its capabilities: no locks to renew, abandon, and dead letters once a dead-letter topic is configured', async () => {
        const flags = (queue: MqttMessageQueue): boolean[] => {
            const caps = queue.getCapabilities();
            return [caps.canMessageCount, caps.canSend, caps.canReceive, caps.canPeek, caps.canPeekBatch, caps.canRenewLock, caps.canAbandon,
                caps.canDeadLetter, caps.canClear];
        };
        assert.deepEqual(flags(new MqttMessageQueue('q')), [true, true, true, true, true, false, true, false, true]);
        await withQueue(uniqueTopic('caps'), ['options.dead_letter_topic', uniqueTopic('caps-dead')], (queue) => {
            assert.deepEqual(flags(queue), [true, true, true, true, true, false, true, true, true]);
            return Promise.resolve();
        });
    });

    it('subscribes once, on the first peek/receive/listen, and again only after a reopen', async () => {
        await withQueue(uniqueTopic('once'), [], async (queue, { connection }) => {
            const counting = connection as CountingConnection;
            assert.equal(counting.subscribeCalls, 0, 'no autosubscribe: nothing at open');
            await Promise.all([queue.peek(null), queue.receive(null, 0), queue.peekBatch(null, 3)]);
            assert.equal(counting.subscribeCalls, 1, 'concurrent first calls share one subscribe');
            for (let i = 0; i < 5; i++) {
                await queue.receive(null, 0);
                await queue.peek(null);
            }
            queue.listen(null, { receiveMessage: () => Promise.resolve() });
            queue.endListen(null);
            assert.equal(counting.subscribeCalls, 1, 'never twice');
            await queue.close(null);
            await queue.open(null);
            await queue.receive(null, 0);
            assert.equal(counting.subscribeCalls, 2, 'once more after reopening');
        });
    });

    it('with autosubscribe, subscribes at open', async () => {
        const topic = uniqueTopic('auto');
        await withQueue(topic, ['options.autosubscribe', true], (_queue, { connection }) => {
            assert.equal((connection as CountingConnection).subscribeCalls, 1);
            assert.deepEqual(connection.getSubscriptions().map((s) => s.filter), [topic]);
            return Promise.resolve();
        });
    });

    it('uses a referenced connection without configuration, opens it if needed, never closes it', async (t) => {
        const f = fixture(t);
        const { connection, references } = sharedSetup();
        f.defer(() => connection.close(null));
        const topic = uniqueTopic('shared');
        const queue = f.closing(queueOn(references, topic, 'options.autosubscribe', true));
        const before = broker.broker.connectionCount();
        await queue.open(null);
        assert.ok(connection.isOpen(), 'the queue opened the shared connection');
        assert.equal(broker.broker.connectionCount() - before, 1, 'one client connection: no local one');
        await queue.close(null);
        assert.ok(connection.isOpen(), 'still open after the queue closed');
        assert.ok(!connection.getSubscriptions().some((s) => s.filter === topic), 'the queue unsubscribed');
    });

    it('is closed when its shared connection was closed, and reopens it', async () => {
        const topic = uniqueTopic('reopen');
        await withQueue(topic, ['options.autosubscribe', true], async (queue, { connection }) => {
            await connection.close(null);
            assert.equal(queue.isOpen(), false);
            await assert.rejects(queue.send(null, new MessageEnvelope('c', 't', 'x')), { code: MqttErrorCode.NotOpened });
            await queue.open(null);
            assert.ok(connection.isOpen());
            await queue.send(null, new MessageEnvelope('c', 't', 'back'));
            assert.equal((await queue.receive(null, 5000))?.getMessageAsString(), 'back', 'subscribed again on the new session');
        });
    });

    it('picks the connection named by dependencies.connection', async (t) => {
        const f = fixture(t);
        const { logger } = testReferences();
        const first = new MqttConnection();
        const second = f.closing(new MqttConnection());
        for (const c of [first, second]) c.configure(ConfigParams.fromTuples('connection.uri', broker.url));
        const references = References.fromTuples(
            LOGGER, logger,
            new Descriptor('pip-services', 'connection', 'mqtt', 'first', '1.0'), first,
            new Descriptor('pip-services', 'connection', 'mqtt', 'second', '1.0'), second,
        );
        const queue = f.closing(queueOn(references, uniqueTopic('dep'), 'dependencies.connection', 'pip-services:connection:mqtt:second:1.0'));
        await queue.open(null);
        assert.equal(second.isOpen(), true);
        assert.equal(first.isOpen(), false);
    });

    it('refuses a referenced connection that is not an MqttConnection', () => {
        const queue = new MqttMessageQueue('q');
        assert.throws(() => queue.setReferences(References.fromTuples(CONNECTION, { open: () => undefined })),
            (err: ConfigException) => err instanceof ConfigException && err.code === MqttErrorCode.BadReference);
    });

    it('owns, opens and closes a local connection when none is referenced', async () => {
        const { references } = testReferences();
        const queue = new MqttMessageQueue('local');
        queue.configure(ConfigParams.fromTuples('connection.uri', broker.url, 'topic', uniqueTopic('local'), 'options.autosubscribe', true));
        queue.setReferences(references);
        const before = broker.broker.clientCount();
        await queue.open(null);
        assert.equal(broker.broker.clientCount(), before + 1);
        await queue.close(null);
        await waitFor(() => broker.broker.clientCount() === before, 5000, 'the local client to leave');
        await queue.open(null);
        assert.equal(broker.broker.clientCount(), before + 1, 'reopened');
        await queue.close(null);
    });

    it('fails open() with the configuration error, and leaves no client behind', async () => {
        const queue = new MqttMessageQueue();
        queue.configure(ConfigParams.fromTuples('connection.uri', broker.url));
        await assert.rejects(queue.open('cid'), (err: ConfigException) => err instanceof ConfigException && err.code === MqttErrorCode.NoTopic);
        const bad = new MqttMessageQueue('q');
        bad.configure(ConfigParams.fromTuples('options.qos', 5, 'connection.uri', broker.url));
        await assert.rejects(bad.open(null), { code: MqttErrorCode.BadOption });
        assert.equal(bad.isOpen(), false);
    });

    it('close() during a local connection attempt ends open() promptly with MQTT_CLOSED', async (t) => {
        const f = fixture(t);
        const silent = await f.silent();
        const queue = new MqttMessageQueue('q');
        queue.configure(ConfigParams.fromTuples('connection.uri', silent.url, 'options.connect_timeout', 60000));
        const opening = queue.open(null);
        await delay(50);
        const started = Date.now();
        await queue.close(null);
        await assert.rejects(opening, (err: InvalidStateException) => err instanceof InvalidStateException && err.code === MqttErrorCode.Closed);
        assert.ok(Date.now() - started < 10000, 'did not wait for connect_timeout');
        assert.equal(queue.isOpen(), false);
    });

    it('close() while a shared connection is still opening ends open() promptly, and leaves the connection to its owner', async (t) => {
        const f = fixture(t);
        const silent = await f.silent();
        const connection = f.closing(new MqttConnection());
        connection.configure(ConfigParams.fromTuples('connection.uri', silent.url, 'options.connect_timeout', 60000));
        const queue = queueOn(References.fromTuples(CONNECTION, connection), uniqueTopic('opening'));
        const opening = queue.open(null);
        await delay(50);
        const started = Date.now();
        await queue.close(null);
        await assert.rejects(opening, (err: InvalidStateException) => err instanceof InvalidStateException && err.code === MqttErrorCode.Closed);
        assert.ok(Date.now() - started < 10000, 'did not wait for connect_timeout');
        // The owner's open() is still going: closing it ends it.
        const owners = connection.open(null);
        await connection.close(null);
        await assert.rejects(owners, { code: MqttErrorCode.Closed });
    });

    it('reports use before open and bad arguments with stable codes', async (t) => {
        const f = fixture(t);
        const queue = new MqttMessageQueue('q');
        const envelope = new MessageEnvelope('c', 't', 'x');
        await assert.rejects(queue.send('cid', envelope), (err: InvalidStateException) =>
            err instanceof InvalidStateException && err.code === MqttErrorCode.NotOpened && err.correlation_id === 'cid');
        await assert.rejects(queue.receive(null, 10), { code: MqttErrorCode.NotOpened });
        await assert.rejects(queue.peek(null), { code: MqttErrorCode.NotOpened });
        assert.throws(() => queue.listen(null, { receiveMessage: () => Promise.resolve() }), { code: MqttErrorCode.NotOpened });

        const { connection, references } = sharedSetup();
        f.defer(() => connection.close(null));
        const open = f.closing(queueOn(references, uniqueTopic('args')));
        await open.open(null);
        await assert.rejects(open.send(null, null as unknown as MessageEnvelope), { code: MqttErrorCode.InvalidEnvelope });
        await assert.rejects(open.receive(null, -1), (err: BadRequestException) =>
            err instanceof BadRequestException && err.code === MqttErrorCode.InvalidArgument);
        await assert.rejects(open.receive(null, Number.NaN), { code: MqttErrorCode.InvalidArgument });
        await assert.rejects(open.peekBatch(null, 1.5), { code: MqttErrorCode.InvalidArgument });
        assert.throws(() => open.listen(null, null as unknown as IMessageReceiver), { code: MqttErrorCode.InvalidArgument });
    });

    it('beginListen on a closed queue logs the error instead of throwing', async () => {
        const { logger, references } = testReferences();
        const queue = new MqttMessageQueue('q');
        queue.setReferences(references);
        queue.beginListen(null, { receiveMessage: () => Promise.resolve() });
        await waitFor(() => logger.messages(LogLevel.Error).length > 0, 2000, 'the logged error');
        assert.match(logger.text(), /MQTT_NOT_OPENED|not open/);
    });

    it('counts sent and received messages', async () => {
        await withQueue(uniqueTopic('count'), ['options.autosubscribe', true, 'options.qos', 1], async (queue, { counters }) => {
            for (let i = 0; i < 3; i++) await queue.send(null, new MessageEnvelope('c', 't', `m${i}`));
            await waitFor(async () => (await queue.readMessageCount()) === 3, 5000, '3 messages');
            assert.equal(counters.increments.get('queue.q.sent_messages'), 3);
            assert.equal(counters.increments.get('queue.q.received_messages'), 3);
        });
    });

    it('bounds its buffer with acknowledgement on arrival: drops, counts and logs beyond options.max_buffered, then takes messages again', async () => {
        await withQueue(uniqueTopic('bound'), ['options.autosubscribe', true, 'options.qos', 1, 'options.max_buffered', 5, 'options.acknowledge', 'on_arrival'],
            async (queue, { counters, logger }) => {
            for (let i = 0; i < 8; i++) await queue.send(null, new MessageEnvelope('c', 't', `m${i}`));
            await waitFor(() => counters.increments.get('queue.q.dropped_messages') === 3, 5000, '3 dropped messages');
            assert.equal(await queue.readMessageCount(), 5);
            assert.deepEqual((await queue.peekBatch(null, 10)).map((m) => m.getMessageAsString()), ['m0', 'm1', 'm2', 'm3', 'm4']);
            const warnings = logger.messages(LogLevel.Warn);
            assert.equal(warnings.filter((w) => /is full/.test(w)).length, 1, 'one warning for the burst');

            await queue.receive(null, 0);
            await queue.send(null, new MessageEnvelope('c', 't', 'm8'));
            await waitFor(async () => (await queue.readMessageCount()) === 5, 5000, 'm8 accepted');
            assert.equal((await queue.peekBatch(null, 10)).at(-1)?.getMessageAsString(), 'm8');
            assert.ok(logger.messages(LogLevel.Warn).some((w) => /room again after dropping 3/.test(w)));
        });
    });

    it('drops no QoS 1 or 2 message for a full buffer when it acknowledges after processing (the broker holds back the rest)', async () => {
        for (const qos of [1, 2]) {
            await withQueue(uniqueTopic('nodrop'), ['options.autosubscribe', true, 'options.qos', qos, 'options.max_buffered', 5],
                async (queue, { counters }) => {
                    for (let i = 0; i < 8; i++) await queue.send(null, new MessageEnvelope('c', 't', `m${i}`));
                    await waitFor(async () => (await queue.readMessageCount()) === 8, 5000, `QoS ${qos}: all 8 buffered`);
                    assert.equal(counters.increments.get('queue.q.dropped_messages'), undefined, `QoS ${qos}`);
                    const received: string[] = [];
                    for (let i = 0; i < 8; i++) {
                        const message = await queue.receive(null, 1000);
                        received.push(message?.getMessageAsString() ?? 'none');
                        if (message) await queue.complete(message);
                    }
                    assert.deepEqual(received, ['m0', 'm1', 'm2', 'm3', 'm4', 'm5', 'm6', 'm7'], `QoS ${qos}`);
                });
        }
    });

    it('logs and counts a malformed envelope, never throws, and goes on', async () => {
        const topic = uniqueTopic('malformed');
        await withQueue(topic, ['options.autosubscribe', true, 'options.qos', 1, 'options.serialize_envelope', true], async (queue, { connection, counters, logger }) => {
            await connection.publish(topic, 'secret-payload {not json', { qos: 1 });
            await connection.publish(topic, '{"message": 12}', { qos: 1 });
            await queue.send(null, new MessageEnvelope('c', 't', 'good'));
            assert.equal((await queue.receive(null, 5000))?.getMessageAsString(), 'good');
            assert.equal(counters.increments.get('queue.q.malformed_messages'), 2);
            assert.equal(logger.messages(LogLevel.Error).filter((m) => /malformed/.test(m)).length, 2);
            assert.ok(!logger.text().includes('secret-payload'), 'payloads are never logged');
        });
    });

    it('keeps delivering to a receiver that throws', async (t) => {
        const f = fixture(t);
        const { connection, references, logger } = sharedSetup();
        f.defer(() => connection.close(null));
        const queue = f.closing(queueOn(references, uniqueTopic('throws'), 'options.autosubscribe', true, 'options.qos', 1));
        const got: string[] = [];
        await queue.open(null);
        queue.listen(null, {
            receiveMessage: (m: MessageEnvelope, _q: IMessageQueue) => {
                got.push(m.getMessageAsString());
                if (got.length === 1) throw new Error('receiver bug');
                if (got.length === 2) return Promise.reject(new Error('async receiver bug'));
                return Promise.resolve();
            },
        });
        for (let i = 0; i < 3; i++) await queue.send(null, new MessageEnvelope('c', 't', `m${i}`));
        await waitFor(() => got.length === 3, 5000, 'three deliveries');
        assert.deepEqual(got, ['m0', 'm1', 'm2']);
        assert.equal(logger.messages(LogLevel.Error).filter((m) => /receiver failed/.test(m)).length, 2);
    });

    it('close() resolves waiting receives with null, ends listening, keeps buffered messages for a reopen', async () => {
        await withQueue(uniqueTopic('closing'), ['options.autosubscribe', true, 'options.qos', 1], async (queue, _setup) => {
            const waiting = [queue.receive(null, 60000), queue.receive(null, 60000)];
            await delay(20);
            await queue.close(null);
            assert.deepEqual(await Promise.all(waiting), [null, null]);

            await queue.open(null);
            await queue.send(null, new MessageEnvelope('c', 't', 'kept'));
            await waitFor(async () => (await queue.readMessageCount()) === 1, 5000, 'one buffered');
            const got: string[] = [];
            queue.listen(null, { receiveMessage: (m) => { got.push(m.getMessageAsString()); return Promise.resolve(); } });
            await waitFor(() => got.length === 1, 5000, 'delivery');
            await queue.close(null);
            await queue.open(null);
            await queue.send(null, new MessageEnvelope('c', 't', 'after reopen'));
            await waitFor(async () => (await queue.readMessageCount()) === 1, 5000, 'buffered, not delivered');
            assert.deepEqual(got, ['kept'], 'listening ended at close');
        });
    });

    it('serves concurrent receives in call order', async () => {
        await withQueue(uniqueTopic('order'), ['options.autosubscribe', true, 'options.qos', 1], async (queue, _setup) => {
            const first = queue.receive(null, 10000);
            const second = queue.receive(null, 10000);
            await queue.send(null, new MessageEnvelope('c', 't', 'one'));
            await queue.send(null, new MessageEnvelope('c', 't', 'two'));
            assert.deepEqual([(await first)?.getMessageAsString(), (await second)?.getMessageAsString()], ['one', 'two']);
        });
    });

    it('a wildcard topic receives from every matching topic, typed by topic, and cannot send', async () => {
        const base = uniqueTopic('wild');
        await withQueue(`${base}/+/temp`, ['options.autosubscribe', true, 'options.qos', 1], async (queue, { connection }) => {
            await connection.publish(`${base}/kitchen/temp`, '21', { qos: 1 });
            await connection.publish(`${base}/kitchen/humidity`, '40', { qos: 1 });
            await connection.publish(`${base}/garage/temp`, '9', { qos: 1 });
            const a = await queue.receive(null, 5000);
            const b = await queue.receive(null, 5000);
            assert.deepEqual([a?.message_type, b?.message_type], [`${base}/kitchen/temp`, `${base}/garage/temp`]);
            assert.equal(await queue.receive(null, 100), null);
            await assert.rejects(queue.send(null, new MessageEnvelope('c', 't', 'x')), { code: MqttErrorCode.InvalidTopic });
        });
    });

    it('sendAsObject sends a Buffer as bytes, not as JSON', async () => {
        await withQueue(uniqueTopic('obj'), ['options.autosubscribe', true, 'options.qos', 1], async (queue, _setup) => {
            const bytes = Buffer.from([1, 2, 3, 250]);
            await queue.sendAsObject(null, 'blob', bytes);
            assert.deepEqual((await queue.receive(null, 5000))?.message, bytes);
            await queue.sendAsObject(null, 'text', 'plain');
            assert.equal((await queue.receive(null, 5000))?.getMessageAsString(), 'plain');
        });
    });

    it('publishes with the configured QoS and retain flag', async () => {
        const topic = uniqueTopic('retain');
        await withQueue(topic, ['options.qos', 1, 'options.retain', true], async (queue, { connection }) => {
            await queue.send(null, new MessageEnvelope('c', 't', 'retained'));
            // A subscription made afterwards still gets it: the broker retained it.
            const got = await queue.receive(null, 5000);
            assert.equal(got?.getMessageAsString(), 'retained');
            const packet = got?.getReference() as { qos: number; retain: boolean };
            assert.equal(packet.retain, true);
            assert.equal(packet.qos, 1);
            await connection.publish(topic, '', { qos: 1, retain: true }); // clear it
        });
    });
});

describe('MqttMessageQueue sendAsObject', { timeout: 60000 }, () => {
    const fixture = QueueFixture.use();
    const shared = fixture.shared.bind(fixture);
    const queueOn = fixture.queueOn.bind(fixture);

    // sendAsObject() with a value JSON cannot encode throws a bare TypeError, without a code.
    it('sendAsObject() with an unencodable value fails with a stable code', async () => {
        const { references } = shared();
        const queue = queueOn(references, uniqueTopic('d8'));
        await queue.open(null);
        const circular: Record<string, unknown> = {};
        circular.self = circular;
        for (const bad of [circular, 10n, () => 1]) {
            await assert.rejects(queue.sendAsObject('cid', 't', bad), (err: { code?: string }) => {
                assert.equal(typeof err.code, 'string', `no code: ${(err as Error).message}`);
                return true;
            });
        }
    });
});
