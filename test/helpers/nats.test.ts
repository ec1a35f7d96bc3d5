import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { after, describe, it } from 'node:test';
import mqtt, { type IClientOptions, type IConnackPacket, type MqttClient } from 'mqtt';

import { natsAvailable, natsSkip, startNats, type NatsBroker } from './nats';
import { canConnect, uniqueTopic, waitFor } from './net';

interface Received {
    topic: string;
    payload: string;
    qos: number;
    retain: boolean;
}

/** Connects with MQTT.js (3.1.1, no reconnects) and records every message it gets. */
async function client(url: string, options: IClientOptions = {}): Promise<{ c: MqttClient; ack: IConnackPacket; got: Received[] }> {
    const c = mqtt.connect(url, { protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 5000, ...options });
    const got: Received[] = [];
    c.on('message', (topic, payload, packet) => {
        got.push({ topic, payload: payload.toString(), qos: packet.qos, retain: packet.retain });
    });
    const ack = await new Promise<IConnackPacket>((resolve, reject) => {
        c.once('connect', resolve);
        c.once('error', reject);
        c.once('close', () => reject(new Error('closed before CONNACK')));
    });
    return { c, ack, got };
}

/** The CONNACK return code a CONNECT with these options gets (0 when accepted). */
async function connackCode(url: string, options: IClientOptions): Promise<number> {
    const c = mqtt.connect(url, { protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 5000, ...options });
    try {
        return await new Promise<number>((resolve, reject) => {
            c.on('packetreceive', (packet) => {
                if (packet.cmd === 'connack') {
                    resolve(packet.returnCode ?? -1);
                }
            });
            c.once('close', () => reject(new Error('closed without a CONNACK')));
        });
    } finally {
        c.end(true);
    }
}

describe('natsSkip', () => {
    it('names the missing binary, and runs anyway when REQUIRE_BROKERS asks for nats', () => {
        const saved = { bin: process.env.NATS_BIN, required: process.env.REQUIRE_BROKERS };
        try {
            process.env.NATS_BIN = '/nonexistent/nats-server';
            delete process.env.REQUIRE_BROKERS;
            assert.equal(natsAvailable(), false);
            assert.match(String(natsSkip()), /nats-server binary not found/);
            for (const required of ['nats', 'mosquitto, nats', 'rabbitmq NATS', 'all']) {
                process.env.REQUIRE_BROKERS = required;
                assert.equal(natsSkip(), false, required);
            }
            process.env.REQUIRE_BROKERS = 'mosquitto,natsx';
            assert.notEqual(natsSkip(), false);
        } finally {
            for (const [name, value] of [['NATS_BIN', saved.bin], ['REQUIRE_BROKERS', saved.required]] as const) {
                if (value === undefined) {
                    delete process.env[name];
                } else {
                    process.env[name] = value;
                }
            }
        }
    });
});

describe('NATS test helper', { skip: natsSkip(), timeout: 60000 }, () => {
    const brokers: NatsBroker[] = [];
    const clients: MqttClient[] = [];
    const track = <T extends { c: MqttClient }>(x: T): T => {
        clients.push(x.c);
        return x;
    };
    const start = async (...args: Parameters<typeof startNats>): Promise<NatsBroker> => {
        const broker = await startNats(...args);
        brokers.push(broker);
        return broker;
    };

    after(async () => {
        for (const c of clients) {
            c.end(true);
        }
        await Promise.all(brokers.map((b) => b.cleanup()));
    });

    it('starts on free ports of its own and accepts an MQTT.js connection', async () => {
        const broker = await start();
        assert.equal(broker.kind, 'nats');
        assert.equal(broker.url, `mqtt://127.0.0.1:${broker.port}`);
        assert.notEqual(broker.port, 4222);
        assert.notEqual(broker.clientPort, 4222);
        assert.notEqual(broker.port, broker.clientPort);
        assert.ok(broker.pid);
        const config = fs.readFileSync(broker.configFile, 'utf8');
        assert.match(config, /jetstream \{/);
        assert.doesNotMatch(config, /http|cluster|gateway|leafnodes|websocket/);
        assert.ok(await canConnect(broker.clientPort));

        const { c, ack, got } = track(await client(broker.url, { clientId: 'nats-helper-smoke' }));
        assert.equal(ack.returnCode, 0);
        const topic = uniqueTopic('nats');
        // NATS 2.9 grants at most QoS 1 (a QoS 2 PUBLISH gets the connection closed).
        assert.deepEqual((await c.subscribeAsync(topic, { qos: 2 })).map((g) => g.qos), [1]);
        await c.publishAsync(topic, 'hello', { qos: 1 });
        await waitFor(() => got.length === 1, 5000, 'the message');
        assert.deepEqual(got, [{ topic, payload: 'hello', qos: 1, retain: false }]);
    });

    it('keeps retained messages and persistent sessions across restart() on the same ports', async () => {
        const broker = await start();
        const { port, clientPort, pid } = broker;
        const retainedTopic = uniqueTopic('nats/retained');
        const sessionTopic = uniqueTopic('nats/session');
        const clientId = `nats-helper-session-${Date.now()}`;

        const first = await client(broker.url, { clientId, clean: false });
        assert.equal(first.ack.sessionPresent, false);
        await first.c.subscribeAsync(sessionTopic, { qos: 1 });
        await first.c.endAsync();

        const publisher = await client(broker.url, { clientId: 'nats-helper-pub-1' });
        await publisher.c.publishAsync(retainedTopic, 'kept', { qos: 1, retain: true });
        await publisher.c.publishAsync(sessionTopic, 'before restart', { qos: 1 });
        await publisher.c.endAsync();

        await broker.restart();
        assert.equal(broker.port, port);
        assert.equal(broker.clientPort, clientPort);
        assert.notEqual(broker.pid, pid);

        const publisher2 = await client(broker.url, { clientId: 'nats-helper-pub-2' });
        await publisher2.c.publishAsync(sessionTopic, 'after restart', { qos: 1 });
        await publisher2.c.endAsync();

        // NATS keeps the session (and its JetStream consumer) in the store: the subscription is
        // still there and both QoS 1 messages queued while the client was away are delivered.
        const again = track(await client(broker.url, { clientId, clean: false }));
        assert.equal(again.ack.sessionPresent, true);
        await waitFor(() => again.got.length === 2, 5000, 'the queued session messages');
        assert.deepEqual(
            again.got.map((m) => [m.payload, m.qos]),
            [['before restart', 1], ['after restart', 1]],
        );

        const late = track(await client(broker.url, { clientId: 'nats-helper-late' }));
        await late.c.subscribeAsync(retainedTopic, { qos: 1 });
        await waitFor(() => late.got.length === 1, 5000, 'the retained message');
        assert.deepEqual(late.got, [{ topic: retainedTopic, payload: 'kept', qos: 1, retain: true }]);
    });

    it('with passwords refuses anonymous clients and bad passwords (CONNACK 5) and accepts the users', async () => {
        // Quotes, a backslash, `$`, `#` and spaces must reach NATS verbatim through the config.
        const password = 'p"a\\ss $HOME #x ü';
        const broker = await start({ passwords: { alice: password, bob: 'second' } });
        assert.equal(await connackCode(broker.url, { clientId: 'nats-helper-anon' }), 5);
        assert.equal(await connackCode(broker.url, { clientId: 'nats-helper-bad', username: 'alice', password: 'wrong' }), 5);
        assert.equal(await connackCode(broker.url, { clientId: 'nats-helper-who', username: 'carol', password }), 5);
        assert.equal(await connackCode(broker.url, { clientId: 'nats-helper-alice', username: 'alice', password }), 0);

        const { c, got } = track(await client(broker.url, { clientId: 'nats-helper-bob', username: 'bob', password: 'second' }));
        const topic = uniqueTopic('nats/auth');
        await c.subscribeAsync(topic, { qos: 1 });
        await c.publishAsync(topic, 'allowed', { qos: 1 });
        await waitFor(() => got.length === 1, 5000, 'the message');
    });

    it('stop() closes the ports, start() and kill() are idempotent, cleanup() removes the folder', async () => {
        const broker = await start({ passwords: {} });
        await Promise.all([broker.start(), broker.start()]);
        const pid = broker.pid;

        await Promise.all([broker.stop(), broker.stop()]);
        assert.equal(broker.pid, undefined);
        assert.equal(await canConnect(broker.port), false);
        assert.equal(await canConnect(broker.clientPort), false);

        await broker.start();
        assert.notEqual(broker.pid, pid);
        assert.ok(await canConnect(broker.port));
        await broker.kill();
        assert.equal(broker.pid, undefined);
        assert.equal(await canConnect(broker.port), false);
        await broker.kill();

        // Restarting after a SIGKILL recovers the JetStream store.
        await broker.start();
        assert.equal(await connackCode(broker.url, { clientId: 'nats-helper-anon-2' }), 5);

        assert.ok(fs.existsSync(broker.dir));
        await broker.cleanup();
        assert.equal(fs.existsSync(broker.dir), false);
        assert.equal(await canConnect(broker.port), false);
    });
});
