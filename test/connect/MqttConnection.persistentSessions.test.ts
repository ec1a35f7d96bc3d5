// Persistent sessions (clean_session false): what the broker kept while the client was away, held for listeners not subscribed yet, and filters unsubscribed meanwhile.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { LogLevel } from 'pip-services3-components-nodex';

import type { MqttConnection } from '../../src';
import { delay, mosquittoSkip, uniqueTopic, waitFor } from '../helpers/brokers';
import { dropConnection, RecordingListener, testReferences, uniqueClientId } from '../helpers/components';
import type { FaultProxy } from '../helpers/faultProxy';
import { EACH_BROKER, fixture, type Fixture } from '../helpers/fixture';

function numbers(listener: RecordingListener): number[] {
    return listener.received.map((m) => Number(m.data.toString()));
}

/**
 * An open subscriber with a persistent session on Aedes, through a fault proxy that can refuse its
 * reconnect (on a busy machine the client could otherwise be back before the calls a test makes
 * offline), and an open publisher straight to the broker.
 */
async function persistentBehindProxy(f: Fixture): Promise<{ proxy: FaultProxy; sub: MqttConnection; pub: MqttConnection }> {
    const broker = await f.aedes();
    const proxy = await f.proxy(broker.host, broker.port);
    const sub = f.connection(proxy.url, 'client_id', uniqueClientId('edge'), 'options.clean_session', false, 'options.reconnect_timeout', 300);
    const pub = f.connection(broker.url);
    await sub.open(null);
    await pub.open(null);
    return { proxy, sub, pub };
}

function sent(connection: MqttConnection): string[] {
    const log: string[] = [];
    connection.getConnection()!.on('packetsend', (p: { cmd: string; subscriptions?: { topic: string }[]; unsubscriptions?: string[] }) => {
        if (p.cmd === 'subscribe') log.push(`SUBSCRIBE ${p.subscriptions!.map((s) => s.topic).join(',')}`);
        if (p.cmd === 'unsubscribe') log.push(`UNSUBSCRIBE ${p.unsubscriptions!.join(',')}`);
    });
    return log;
}

interface AsyncPersistence { removeSubscriptions(client: { id: string }, subs: string[]): Promise<void> }

/** The embedded broker's Aedes persistence, to make it lose a subscription as a crashed broker may. */
function persistenceOf(broker: { broker: unknown }): AsyncPersistence {
    return (broker.broker as { _aedes: { persistence: AsyncPersistence } })._aedes.persistence;
}

for (const { kind, skip } of EACH_BROKER) {
    describe(`MqttConnection sessions (${kind})`, { skip, timeout: 60000 }, () => {
        for (const clean of [false, true]) {
            it(`${clean ? 'loses' : 'keeps'} QoS 1 messages published while disconnected with clean_session ${clean}`, async (t) => {
                const f = fixture(t);
                const broker = await f.broker(kind);
                // Through a proxy that refuses the reconnect until the messages are published:
                // on a busy machine the client could otherwise be back before them.
                const proxy = await f.proxy(broker.host, broker.port);
                const sub = f.connection(proxy.url, 'client_id', uniqueClientId('persist'), 'options.clean_session', clean,
                    'options.reconnect_timeout', 1000);
                const pub = f.connection(broker.url);
                await sub.open(null);
                await pub.open(null);
                const topic = uniqueTopic('session');
                const marker = `${topic}/marker`;
                const listener = new RecordingListener();
                await sub.subscribe(topic, { qos: 1 }, listener);
                await sub.subscribe(marker, { qos: 1 }, listener);

                proxy.refuse();
                await dropConnection(sub);
                for (let i = 1; i <= 20; i++) await pub.publish(topic, String(i), { qos: 1 });
                proxy.accept();
                await waitFor(() => sub.isConnected(), 10000, 'the reconnect');
                // The marker is published after the reconnect: once it is in, everything kept is in.
                await waitFor(async () => {
                    await pub.publish(marker, '0', { qos: 1 });
                    return listener.topics().includes(marker);
                }, 10000, 'the marker');
                // Aedes may still be sending what it kept when the live marker overtakes it.
                if (!clean) {
                    await waitFor(() => numbers(listener).filter((n) => n > 0).length >= 20, 10000, 'the kept messages').catch(() => undefined);
                }
                const kept = numbers(listener).filter((n) => n > 0);
                assert.deepEqual(kept, clean ? [] : Array.from({ length: 20 }, (_, i) => i + 1));
            });
        }

        it('hands a new process the messages its persistent session kept, when it subscribes again', async (t) => {
            const f = fixture(t);
            const broker = await f.broker(kind);
            const id = uniqueClientId('persist');
            const first = f.connection(broker.url, 'client_id', id, 'options.clean_session', false);
            const pub = f.connection(broker.url);
            const { references, counters } = testReferences();
            const second = f.connection(broker.url, 'client_id', id, 'options.clean_session', false);
            second.setReferences(references);
            await first.open(null);
            await pub.open(null);
            const topic = uniqueTopic('restart');
            await first.subscribe(`${topic}/+`, { qos: 1 }, new RecordingListener());
            // The process goes away without unsubscribing: the broker keeps the session.
            await first.close(null);
            for (let i = 1; i <= 10; i++) await pub.publish(`${topic}/${i % 2 === 0 ? 'even' : 'odd'}`, String(i), { qos: 1 });

            await second.open(null);
            // The broker sends what it kept right after CONNACK, before anyone subscribes.
            await waitFor(() => (counters.increments.get('mqtt.received_messages') ?? 0) >= 10, 5000, 'the kept messages');
            const odd = new RecordingListener();
            const all = new RecordingListener();
            await second.subscribe(`${topic}/odd`, { qos: 1 }, odd);
            await second.subscribe(`${topic}/+`, { qos: 1 }, all);
            assert.deepEqual(numbers(odd), [1, 3, 5, 7, 9]);
            // Each held message goes to the first listener that matches it, once.
            assert.deepEqual(numbers(all), [2, 4, 6, 8, 10]);
            await pub.publish(`${topic}/odd`, '11', { qos: 1 });
            await waitFor(() => numbers(all).includes(11) && numbers(odd).includes(11), 5000, 'a live message to both');
        });

        it('holds at most max_offline_messages messages for listeners not subscribed yet, and says so once', async (t) => {
            const f = fixture(t);
            const broker = await f.broker(kind);
            const id = uniqueClientId('persist');
            const first = f.connection(broker.url, 'client_id', id, 'options.clean_session', false);
            const pub = f.connection(broker.url);
            const { references, counters, logger } = testReferences();
            const second = f.connection(broker.url, 'client_id', id, 'options.clean_session', false, 'options.max_offline_messages', 3);
            second.setReferences(references);
            await first.open(null);
            await pub.open(null);
            const topic = uniqueTopic('hold-limit');
            await first.subscribe(topic, { qos: 1 }, new RecordingListener());
            await first.close(null);
            for (let i = 1; i <= 6; i++) await pub.publish(topic, String(i), { qos: 1 });
            await second.open(null);
            await waitFor(() => (counters.increments.get('mqtt.received_messages') ?? 0) >= 6, 5000, 'the kept messages');
            assert.equal(counters.increments.get('mqtt.dropped_messages'), 3);
            assert.equal(logger.messages().filter((m) => /no listener subscribes to/.test(m)).length, 1, 'one warning per burst');
            const listener = new RecordingListener();
            await second.subscribe(topic, { qos: 1 }, listener);
            assert.deepEqual(numbers(listener), [1, 2, 3]);
        });

        it('unsubscribes after the reconnect what was unsubscribed while a persistent session was disconnected', async (t) => {
            const f = fixture(t);
            const broker = await f.broker(kind);
            const { references, counters } = testReferences();
            const sub = f.connection(broker.url, 'client_id', uniqueClientId('persist'), 'options.clean_session', false,
                'options.reconnect_timeout', 1000);
            sub.setReferences(references);
            const pub = f.connection(broker.url);
            await sub.open(null);
            await pub.open(null);
            const topic = uniqueTopic('unsub');
            const gone = new RecordingListener();
            const stays = new RecordingListener();
            await sub.subscribe(`${topic}/gone`, { qos: 1 }, gone);
            await sub.subscribe(`${topic}/stays`, { qos: 1 }, stays);
            await dropConnection(sub);
            // Returns at once: the UNSUBSCRIBE goes out after the reconnect.
            await sub.unsubscribe(`${topic}/gone`, gone);
            await waitFor(() => sub.isConnected(), 10000, 'the reconnect');
            await waitFor(async () => {
                await pub.publish(`${topic}/stays`, 'x', { qos: 1 });
                return stays.received.length > 0;
            }, 10000, 'delivery on the kept filter');
            await delay(200);
            const before = counters.increments.get('mqtt.received_messages') ?? 0;
            await pub.publish(`${topic}/gone`, 'nobody', { qos: 1 });
            await pub.publish(`${topic}/stays`, 'last', { qos: 1 });
            await waitFor(() => stays.received.some((m) => m.data.toString() === 'last'), 5000, 'the last message');
            assert.equal(counters.increments.get('mqtt.received_messages'), before + 1, 'the broker no longer sends the dropped filter');
            assert.equal(gone.received.length, 0);
        });
    });
}

describe('MqttConnection persistent sessions across reconnects and restarts', { timeout: 120000 }, () => {
    it('subscribes again after a reconnect even when the broker says it kept the session but lost a subscription (mosquitto)', { skip: mosquittoSkip() }, async (t) => {
        const f = fixture(t);
        const broker = await f.mosquitto({ persistence: true });
        const sub = f.connection(broker.url, 'client_id', uniqueClientId('edge'), 'options.clean_session', false,
            'options.reconnect_timeout', 100, 'options.max_reconnect_timeout', 200);
        const pub = f.connection(broker.url, 'options.reconnect_timeout', 100, 'options.max_reconnect_timeout', 200);
        const { references, logger } = testReferences();
        sub.setReferences(references);
        await sub.open(null);
        await pub.open(null);
        const topic = uniqueTopic('f1');
        const a = new RecordingListener();
        const b = new RecordingListener();
        await sub.subscribe(`${topic}/a`, { qos: 1 }, a);
        // Graceful stop: mosquitto saves its database (session + subscription a).
        await broker.stop();
        await broker.start();
        await waitFor(() => sub.isConnected() && pub.isConnected(), 10000, 'reconnect 1');
        await sub.subscribe(`${topic}/b`, { qos: 1 }, b); // SUBACK received
        // Crash before the next autosave: subscription b is not in the database.
        await broker.kill('SIGKILL');
        await broker.start();
        await waitFor(() => sub.isConnected() && pub.isConnected(), 10000, 'reconnect 2');
        await pub.publish(`${topic}/a`, 'A', { qos: 1 });
        await pub.publish(`${topic}/b`, 'B', { qos: 1 });
        await delay(1500);
        assert.equal(a.received.length, 1);
        assert.equal(b.received.length, 1, 'the subscription the broker lost in the crash is back');
        assert.ok(logger.messages().some((m) => /the broker kept the session/.test(m)));
    });

    // The broker says it kept the session but lost the filter, and now refuses QoS 1 for it.
    it('subscribes the remaining listeners again when the broker refuses a resubscription after a reconnect', async (t) => {
        const f = fixture(t);
        let refuse = false;
        const topic = uniqueTopic('r1');
        const { references, logger } = testReferences();
        const broker = await f.aedes({ keepSessions: true, authorizeSubscribe: (_id, t, qos) => !(refuse && t === topic && qos >= 1) });
        const id = uniqueClientId('edge');
        const sub = f.connection(broker.url, 'client_id', id, 'options.clean_session', false, 'options.reconnect_timeout', 100);
        const pub = f.connection(broker.url, 'options.reconnect_timeout', 100);
        sub.setReferences(references);
        await sub.open(null);
        const keep = new RecordingListener();
        await sub.subscribe(`${topic}/keep`, { qos: 1 }, keep); // keeps the session "present"
        const q1 = new RecordingListener();
        const q0 = new RecordingListener();
        await sub.subscribe(topic, { qos: 1 }, q1);
        await sub.subscribe(topic, { qos: 0 }, q0);
        const log = sent(sub);
        const persistence = persistenceOf(broker);
        await broker.broker.kill();
        await waitFor(() => !sub.isConnected(), 5000, 'loss');
        // The crash lost the subscription (as Mosquitto does between two saves), and the ACL now refuses QoS 1.
        await persistence.removeSubscriptions({ id }, [topic]);
        refuse = true;
        await broker.broker.restart();
        await waitFor(() => sub.isConnected(), 10000, 'reconnect');
        await pub.open(null);
        await waitFor(() => sub.getSubscriptions().every((s) => s.listener !== q1), 5000, 'q1 removed after the refusal');
        await delay(300);
        await pub.publish(topic, 'x', { qos: 0 });
        await delay(500);
        assert.deepEqual(sub.getSubscriptions().filter((s) => s.listener === q0).length, 1, 'q0 is still listed as subscribed');
        assert.ok(logger.messages().some((m) => /the broker kept the session/.test(m)), 'verify path');
        assert.equal(q0.received.length, 1, `q0 gets messages (SUBSCRIBEs after the reconnect: ${JSON.stringify(log)})`);
    });

    it('sends no UNSUBSCRIBE after a reconnect for a filter unsubscribed and subscribed again while offline', async (t) => {
        const f = fixture(t);
        // Both calls are made offline: the proxy holds the reconnect off until they are.
        const { proxy, sub, pub } = await persistentBehindProxy(f);
        const topic = uniqueTopic('f4');
        await pub.publish(topic, 'retained', { qos: 1, retain: true });
        const l1 = new RecordingListener();
        await sub.subscribe(topic, { qos: 1 }, l1);
        await waitFor(() => l1.received.length === 1, 5000, 'the retained');
        const log = sent(sub);
        proxy.refuse();
        await dropConnection(sub);
        await sub.unsubscribe(topic, l1);
        const l2 = new RecordingListener();
        const subscribed = sub.subscribe(topic, { qos: 1 }, l2);
        proxy.accept();
        await waitFor(() => sub.isConnected(), 10000, 'the reconnect');
        await subscribed;
        await delay(500);
        // The filter is only confirmed again (see the first test), never dropped in between.
        assert.deepEqual(log, [`SUBSCRIBE ${topic}`]);
    });

    it('does not hold messages for a filter unsubscribed while offline for a later listener', async (t) => {
        const f = fixture(t);
        // The unsubscribe and the publishes are made offline: the proxy holds the reconnect off until they are.
        const { proxy, sub, pub } = await persistentBehindProxy(f);
        const topic = uniqueTopic('f2');
        const gone = new RecordingListener();
        await sub.subscribe(`${topic}/gone`, { qos: 1 }, gone);
        proxy.refuse();
        await dropConnection(sub);
        await sub.unsubscribe(`${topic}/gone`, gone); // "receives nothing more"
        for (let i = 1; i <= 5; i++) await pub.publish(`${topic}/gone`, `stale-${i}`, { qos: 1 });
        proxy.accept();
        await waitFor(() => sub.isConnected(), 10000, 'the reconnect');
        await delay(500);
        // Much later another component subscribes to a wider filter, for live data only.
        const later = new RecordingListener();
        await sub.subscribe(`${topic}/#`, { qos: 0 }, later);
        assert.equal(later.received.length, 0, 'messages of an unsubscribed filter are not replayed to a new listener');
    });

    it('does not hold messages still arriving after an unsubscribe for a later listener', async (t) => {
        const f = fixture(t);
        const broker = await f.aedes();
        const sub = f.connection(broker.url, 'client_id', uniqueClientId('edge'), 'options.clean_session', false);
        const pub = f.connection(broker.url);
        const { references, counters } = testReferences();
        sub.setReferences(references);
        await sub.open(null);
        await pub.open(null);
        const topic = uniqueTopic('f2b');
        const first = new RecordingListener();
        await sub.subscribe(`${topic}/x`, { qos: 1 }, first);
        // A busy stream, then the listener leaves while messages are on the wire.
        const flood = Promise.all(Array.from({ length: 2000 }, (_, i) => pub.publish(`${topic}/x`, String(i), { qos: 1 })));
        await waitFor(() => first.received.length > 100, 5000, 'the stream');
        await sub.unsubscribe(`${topic}/x`, first);
        await flood;
        await delay(500);
        const later = new RecordingListener();
        await sub.subscribe(`${topic}/+`, { qos: 0 }, later);
        t.diagnostic(`${(counters.increments.get('mqtt.received_messages') ?? 0) - first.received.length} messages arrived after the unsubscribe`);
        assert.equal(later.received.length, 0);
    });

    // A PUBLISH does not say which subscription it is for: a message of the older session's
    // narrower filter that matches a wildcard this process let go of is dropped, and counted.
    it('counts as dropped a message of an older session filter that also matches a filter this process unsubscribed', async (t) => {
        const f = fixture(t);
        const broker = await f.aedes();
        const id = uniqueClientId('edge');
        const base = uniqueTopic('r3');
        const old = f.connection(broker.url, 'client_id', id, 'options.clean_session', false);
        await old.open(null);
        await old.subscribe(`${base}/x/temp`, { qos: 1 }, new RecordingListener());
        await old.close(null); // the broker keeps the session with its subscription
        const { references, counters } = testReferences();
        const conn = f.connection(broker.url, 'client_id', id, 'options.clean_session', false);
        conn.setReferences(references);
        const pub = f.connection(broker.url);
        await conn.open(null);
        await pub.open(null);
        const wide = new RecordingListener();
        await conn.subscribe(`${base}/+/temp`, { qos: 1 }, wide);
        await conn.unsubscribe(`${base}/+/temp`, wide);
        await pub.publish(`${base}/x/temp`, 'for the old session filter', { qos: 1 });
        await delay(300);
        const late = new RecordingListener();
        await conn.subscribe(`${base}/x/temp`, { qos: 1 }, late);
        await delay(200);
        const dropped = counters.increments.get('mqtt.dropped_messages') ?? 0;
        const received = counters.increments.get('mqtt.received_messages') ?? 0;
        assert.equal(received, 1);
        assert.equal(dropped, 1, 'the message is counted as dropped');
        assert.equal(late.received.length, 0);
    });

    it('counts and logs the held messages that close() drops', async (t) => {
        const f = fixture(t);
        const broker = await f.aedes();
        const id = uniqueClientId('edge');
        const first = f.connection(broker.url, 'client_id', id, 'options.clean_session', false);
        const second = f.connection(broker.url, 'client_id', id, 'options.clean_session', false);
        const pub = f.connection(broker.url);
        const { references, logger, counters } = testReferences();
        second.setReferences(references);
        await first.open(null);
        await pub.open(null);
        const topic = uniqueTopic('f6');
        await first.subscribe(topic, { qos: 1 }, new RecordingListener());
        await first.close(null);
        for (let i = 0; i < 5; i++) await pub.publish(topic, String(i), { qos: 1 });
        await second.open(null);
        await waitFor(() => (counters.increments.get('mqtt.received_messages') ?? 0) >= 5, 5000, 'the kept messages');
        await second.close(null);
        assert.equal(counters.increments.get('mqtt.dropped_messages'), 5);
        assert.ok(logger.messages(LogLevel.Warn).some((m) => /with 5 messages of its persistent session/.test(m)));
    });

    it('logs no error when closed during an outage after an offline unsubscribe', async (t) => {
        const f = fixture(t);
        const broker = await f.aedes({ keepSessions: true });
        const id = uniqueClientId('edge');
        const { references, logger } = testReferences();
        const conn = f.connection(broker.url, 'client_id', id, 'options.clean_session', false, 'options.reconnect_timeout', 200);
        conn.setReferences(references);
        await conn.open(null);
        const topic = uniqueTopic('f9');
        const l = new RecordingListener();
        await conn.subscribe(topic, { qos: 1 }, l);
        await broker.stop();
        await waitFor(() => !conn.isConnected(), 5000, 'loss');
        await conn.unsubscribe(topic, l);
        await conn.close(null);
        await delay(100);
        assert.equal(logger.messages(LogLevel.Error).length, 0);
    });
});
