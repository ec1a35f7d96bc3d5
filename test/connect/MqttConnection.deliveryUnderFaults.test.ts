// No acknowledged message lost (QoS 1), none duplicated (QoS 2), through broker crashes and network faults.
import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';

import type { MqttClient } from 'mqtt';

import type { MqttConnection } from '../../src';
import { delay, mosquittoSkip, startAedes, startMosquitto, uniqueTopic, waitFor } from '../helpers/brokers';
import { uniqueClientId } from '../helpers/components';
import { Fixture, fixture } from '../helpers/fixture';
import { NumberedStream, WireTap } from '../helpers/numberedStream';

/** A broker that can crash (SIGKILL, or sockets destroyed) and come back with its sessions. */
interface CrashableBroker {
    readonly host: string;
    readonly port: number;
    readonly url: string;
    crash(): Promise<void>;
    revive(): Promise<void>;
    stop(): Promise<void>;
}

const brokers: { kind: string; skip: string | false; lossOnCrash: number; lossOnFaults: number; start: () => Promise<CrashableBroker> }[] = [
    {
        kind: 'aedes',
        skip: false,
        lossOnCrash: 0,
        // Aedes 1.2 rarely loses an acknowledged QoS 1 message of a persistent session under
        // connection faults (never sent to the client; see the README).
        lossOnFaults: 5,
        start: async () => {
            const aedes = await startAedes({ keepSessions: true });
            return {
                host: aedes.host, port: aedes.port, url: aedes.url,
                crash: () => aedes.broker.kill(),
                revive: () => aedes.broker.restart(),
                stop: () => aedes.stop(),
            };
        },
    },
    {
        kind: 'mosquitto',
        skip: mosquittoSkip(),
        // PUBACK goes out before the next save: a SIGKILL in between loses what the publisher had
        // in flight (10 at most per crash here), as the README says under Reliability.
        lossOnCrash: 10,
        lossOnFaults: 0,
        start: async () => {
            // Saved after every change, so a SIGKILL loses as little as mosquitto allows.
            const mosquitto = await startMosquitto({ persistence: true, extraConfig: ['autosave_interval 1', 'autosave_on_changes true'] });
            return {
                host: mosquitto.host, port: mosquitto.port, url: mosquitto.url,
                crash: () => mosquitto.kill('SIGKILL'),
                revive: () => mosquitto.start(),
                stop: () => mosquitto.cleanup(),
            };
        },
    },
];

/** Broker kills in the crash test. */
const KILLS = 8;

const CLIENT_EVENTS = ['message', 'connect', 'close', 'error', 'reconnect', 'offline', 'packetreceive', 'disconnect'] as const;

/** How many handlers the client has per event: a reconnect must not add any. */
function handlerCounts(client: MqttClient): Record<string, number> {
    return Object.fromEntries(CLIENT_EVENTS.map((event) => [event, client.listenerCount(event)]));
}

/** A publisher and a persistent-session subscriber on `url`, and a numbered stream between them, stopped and closed with `f`. */
async function streamPair(f: Fixture, url: string, ...options: unknown[]) {
    const tuples = ['options.reconnect_timeout', 50, 'options.max_reconnect_timeout', 500, ...options];
    const pub = f.connection(url, ...tuples);
    const sub = f.connection(url, 'client_id', uniqueClientId('chaos'), 'options.clean_session', false, ...tuples);
    await pub.open(null);
    await sub.open(null);
    const stream = new NumberedStream(pub, uniqueTopic('chaos'), 10);
    f.defer(() => stream.stop());
    await sub.subscribe(stream.topic, { qos: 1 }, stream);
    return { pub, sub, stream };
}

/** Waits until the stream has made `count` more acknowledged messages. */
async function progress(stream: NumberedStream, count: number): Promise<void> {
    const target = stream.counts().acknowledged + count;
    await waitFor(() => stream.counts().acknowledged >= target, 30000, `${count} more acknowledged messages`);
}

/** More acknowledged numbers than allowed never reached the subscribing client: the broker lost them. */
class BrokerLoss extends Error {}

/**
 * Stops the stream and checks that every acknowledged number arrived. With `brokerMayLose`
 * (Mosquitto killed with SIGKILL: it acknowledges a message before its next save; Aedes under
 * faults), numbers that never reached the subscribing client at all are the broker's loss and are
 * reported, up to `brokerMayLose` of them; a number that reached the client but not its listener
 * always fails.
 */
async function checkComplete(t: TestContext, stream: NumberedStream, sub: MqttConnection, pub: MqttConnection,
    wire: WireTap, brokerMayLose = 0): Promise<void> {
    await waitFor(() => sub.isConnected() && pub.isConnected(), 30000, 'both connections back');
    await stream.stop();
    const complete = await waitFor(() => stream.counts().missing === 0, 30000, 'every acknowledged number').then(() => true, () => false);
    const counts = stream.counts();
    t.diagnostic(`acknowledged ${counts.acknowledged}, received ${counts.received}, duplicates ${counts.duplicates}, rejected ${counts.retries}`);
    assert.ok(counts.acknowledged > 0);
    // With retry_connect on, a publish is held while the connection is down: none may fail.
    assert.equal(counts.retries, 0, `publishes rejected: ${stream.rejections().join('; ')}`);
    if (complete) {
        assert.equal(counts.received, counts.acknowledged);
        return;
    }
    const missing = stream.missingNumbers(Number.MAX_SAFE_INTEGER);
    assert.deepEqual(missing.filter((n) => wire.has(n)), [], 'numbers that reached the client but not its listener');
    if (missing.length > brokerMayLose) {
        throw new BrokerLoss(`missing ${missing.length} numbers, never sent to the client (${missing.slice(0, 20).join(', ')}): ${JSON.stringify(counts)}`);
    }
    t.diagnostic(`the broker lost ${missing.length} acknowledged numbers in its crashes, never sent to the client: ${missing.join(', ')}`);
}

for (const { kind, skip, lossOnCrash, lossOnFaults, start } of brokers) {
    describe(`MqttConnection under broker crashes and network faults (${kind})`, { skip, timeout: 180000 }, () => {
        it('loses no acknowledged QoS 1 message of a numbered stream while the broker is killed (SIGKILL) and restarted eight times', async (t) => {
            const f = fixture(t);
            const broker = await start();
            f.defer(() => broker.stop());
            const { pub, sub, stream } = await streamPair(f, broker.url);
            const wire = new WireTap(sub.getConnection()!, stream.topic);
            const handlers = handlerCounts(sub.getConnection()!);
            const subscriptions = sub.getSubscriptions().length;
            stream.start();
            for (let round = 0; round < KILLS; round++) {
                await progress(stream, 200);
                await broker.crash();
                await waitFor(() => !sub.isConnected() && !pub.isConnected(), 10000, 'both to notice the crash');
                await delay(200);
                await broker.revive();
                await waitFor(() => sub.isConnected() && pub.isConnected(), 30000, 'both to reconnect');
            }
            await progress(stream, 200);
            await checkComplete(t, stream, sub, pub, wire, KILLS * lossOnCrash);
            assert.ok(sub.getStatus().reconnects >= KILLS, `reconnects: ${sub.getStatus().reconnects}`);
            assert.deepEqual(handlerCounts(sub.getConnection()!), handlers, 'no handler added by the reconnects');
            assert.equal(sub.getSubscriptions().length, subscriptions);
        });

        it('sends every publish of a 2,000-message offline backlog, and those made while it is resent, through cuts 20 ms after each CONNACK', async (t) => {
            const f = fixture(t);
            const broker = await start();
            f.defer(() => broker.stop());
            const proxy = await f.proxy(broker.host, broker.port);
            const pub = f.connection(proxy.url, 'options.reconnect_timeout', 50, 'options.max_reconnect_timeout', 200);
            const sub = f.connection(broker.url);
            await pub.open(null);
            await sub.open(null);
            const topic = uniqueTopic('backlog');
            const received = new Set<number>();
            await sub.subscribe(topic, { qos: 1 }, { onMessage: (_topic, data) => { received.add(Number(data.toString())); } });
            let next = 1;
            const rejected: string[] = [];
            const publishes: Promise<void>[] = [];
            const publish = (count: number): void => {
                for (let i = 0; i < count; i++) {
                    const n = next++;
                    publishes.push(pub.publish(topic, String(n), { qos: 1 }).catch((err: Error) => { rejected.push(`${n}: ${err.message}`); }));
                }
            };
            proxy.refuse();
            proxy.cutAll();
            await waitFor(() => !pub.isConnected(), 10000, 'the publisher to notice the cut');
            publish(2000);
            // At each of the next three CONNACKs MQTT.js begins to resend: publish more, then cut 20 ms later.
            let cuts = 0;
            pub.getConnection()!.on('packetreceive', (packet) => {
                if (packet.cmd !== 'connack' || cuts >= 3) return;
                cuts++;
                publish(100);
                setTimeout(() => proxy.cutAll(), 20);
            });
            proxy.accept();
            await waitFor(() => cuts >= 3 && pub.isConnected(), 60000, 'three cuts and the connection back');
            await Promise.all(publishes);
            t.diagnostic(`published ${next - 1} in all, ${cuts} cuts after a CONNACK, ${rejected.length} rejected, reconnects ${pub.getStatus().reconnects}`);
            assert.deepEqual(rejected.slice(0, 10), [], `${rejected.length} publishes rejected`);
            await waitFor(() => received.size === next - 1, 30000, `all ${next - 1} numbers (have ${received.size})`);
        });

        // Aedes 1.2 sends QoS 2 messages again after such reconnects, and has lost one (see the README).
        it('delivers a QoS 2 stream exactly once through connection cuts when both sides keep their sessions',
            { skip: kind === 'aedes' ? 'Aedes 1.2 does not keep QoS 2 exactly once across reconnects' : false }, async (t) => {
            const f = fixture(t);
            const broker = await start();
            f.defer(() => broker.stop());
            const proxy = await f.proxy(broker.host, broker.port);
            const tuples = ['options.reconnect_timeout', 50, 'options.max_reconnect_timeout', 500, 'options.clean_session', false];
            const pub = f.connection(proxy.url, 'client_id', uniqueClientId('chaospub'), ...tuples);
            const sub = f.connection(proxy.url, 'client_id', uniqueClientId('chaossub'), ...tuples);
            const stream = new NumberedStream(pub, uniqueTopic('chaos-qos2'), 10, 0, 2);
            f.defer(() => stream.stop());
            await pub.open(null);
            await sub.open(null);
            await sub.subscribe(stream.topic, { qos: 2 }, stream);
            const wire = new WireTap(sub.getConnection()!, stream.topic);
            stream.start();
            for (let round = 0; round < 5; round++) {
                await progress(stream, 100);
                await delay(Math.floor(Math.random() * 100));
                proxy.cutAll();
                await waitFor(() => sub.isConnected() && pub.isConnected(), 30000, 'both to reconnect');
            }
            await progress(stream, 100);
            await checkComplete(t, stream, sub, pub, wire);
            assert.equal(stream.counts().duplicates, 0, 'QoS 2: no duplicates');
        });

        it('loses no acknowledged QoS 1 message while a fault proxy cuts, stalls and refuses connections at random moments', async (t) => {
            // Aedes loses a few messages under faults now and then (never sent to the client; see
            // lossOnFaults): beyond its bound, the run is reported and made once more with a new
            // broker. A loss of ours (a message that reached the client) fails at once.
            const attempts = lossOnFaults > 0 ? 2 : 1;
            for (let attempt = 1; ; attempt++) {
                try {
                    await faultRun(t);
                    return;
                } catch (err) {
                    if (!(err instanceof BrokerLoss) || attempt >= attempts) throw err;
                    t.diagnostic(`attempt ${attempt}: the broker ${err.message}; once more with a new broker`);
                }
            }
        });

        it('loses and rejects no QoS 1 message through 20 connection cuts at random moments, half of them within 30 ms of a CONNACK', async (t) => {
            const f = fixture(t);
            const broker = await start();
            f.defer(() => broker.stop());
            const proxy = await f.proxy(broker.host, broker.port);
            const { pub, sub, stream } = await streamPair(f, proxy.url);
            const wire = new WireTap(sub.getConnection()!, stream.topic);
            // Armed, the next CONNACK of the publisher gets its connection cut 0-30 ms later, while MQTT.js resends.
            let armed = false;
            pub.getConnection()!.on('packetreceive', (packet) => {
                if (packet.cmd !== 'connack' || !armed) return;
                armed = false;
                setTimeout(() => proxy.cutAll(), Math.floor(Math.random() * 30));
            });
            stream.start();
            for (let cut = 0; cut < 20; cut++) {
                await progress(stream, 30);
                await delay(Math.floor(Math.random() * 100));
                armed = cut % 2 === 0;
                proxy.cutAll();
                await waitFor(() => !armed && sub.isConnected() && pub.isConnected(), 30000, `both back after cut ${cut + 1}`);
            }
            await progress(stream, 100);
            await checkComplete(t, stream, sub, pub, wire, lossOnFaults);
            t.diagnostic(`publisher reconnects ${pub.getStatus().reconnects}, subscriber reconnects ${sub.getStatus().reconnects}`);
        });

        async function faultRun(t: TestContext): Promise<void> {
            // A fixture of its own: a second attempt must not run beside what the first left.
            const f = new Fixture();
            try {
                const broker = await start();
                f.defer(() => broker.stop());
                const proxy = await f.proxy(broker.host, broker.port);
                // Keepalive 1 s: a stalled connection is noticed within about 2 s.
                const { pub, sub, stream } = await streamPair(f, proxy.url, 'options.keepalive_timeout', 1000, 'options.connect_timeout', 2000);
                const wire = new WireTap(sub.getConnection()!, stream.topic);
                const handlers = handlerCounts(sub.getConnection()!);
                stream.start();
                const faults = ['cut', 'refuse', 'stall', 'cut', 'stall', 'refuse', 'cut'] as const;
                for (const fault of faults) {
                    await progress(stream, 50);
                    await delay(Math.floor(Math.random() * 300));
                    const noticed = await proxy.inject(fault,
                        { refuseMs: 800, noticed: () => !sub.isConnected() || !pub.isConnected(), timeoutMs: 10000 });
                    assert.ok(noticed, 'a keepalive noticed the stall within 10 s');
                    await waitFor(() => sub.isConnected() && pub.isConnected(), 30000, `both to reconnect after ${fault}`);
                }
                await progress(stream, 100);
                await checkComplete(t, stream, sub, pub, wire, lossOnFaults);
                assert.deepEqual(handlerCounts(sub.getConnection()!), handlers, 'no handler added by the reconnects');
                assert.equal(sub.getSubscriptions().length, 1);
            } finally {
                await f.cleanup();
            }
        }
    });
}
