import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import mqtt, { type IClientOptions, type IPublishPacket, type MqttClient, type Packet } from 'mqtt';

import { TestClients } from './clients';
import { uniqueTopic } from './net';
import { rabbitmqSkip, startRabbitMq, type RabbitMqBroker } from './rabbitmq';

const MESSAGE_TIMEOUT_MS = 5000;
const PASSWORDS = { alice: 'wonderland', bob: 'the builder' };

/** MQTT 3.1.1 clients, ended by endAll() at the end of each test. */
const clients = new TestClients({ protocolVersion: 4 });

/** The next message the client receives (its packet); rejects after MESSAGE_TIMEOUT_MS. */
function nextMessage(client: MqttClient): Promise<IPublishPacket> {
    return new Promise((resolve, reject) => {
        const onMessage = (_topic: string, _payload: Buffer, packet: IPublishPacket): void => {
            clearTimeout(timer);
            resolve(packet);
        };
        const timer = setTimeout(() => {
            client.off('message', onMessage);
            reject(new Error(`no message within ${MESSAGE_TIMEOUT_MS} ms`));
        }, MESSAGE_TIMEOUT_MS);
        client.once('message', onMessage);
    });
}

/** A QoS 1 subscription, then a QoS 1 publish to it from a second client; resolves with the delivery. */
async function roundTrip(url: string, options: IClientOptions = {}): Promise<IPublishPacket> {
    const topic = uniqueTopic('rabbitmq');
    const subscriber = await clients.connect(url, options);
    const granted = await subscriber.subscribeAsync(topic, { qos: 1 });
    assert.deepEqual(granted.map((grant) => grant.qos), [1]);
    const received = nextMessage(subscriber);
    const publisher = await clients.connect(url, options);
    await publisher.publishAsync(topic, 'round trip', { qos: 1 }); // resolves on PUBACK
    const packet = await received;
    assert.equal(packet.topic, topic);
    assert.equal(packet.payload.toString(), 'round trip');
    assert.equal(packet.qos, 1);
    return packet;
}

/** The CONNACK return code a login gets, as read off the wire; undefined when none arrives. */
function connackCode(url: string, options: IClientOptions = {}): Promise<number | undefined> {
    return new Promise((resolve) => {
        const client = mqtt.connect(url, { protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 5000, ...options });
        let code: number | undefined;
        client.on('packetreceive', (packet: Packet) => {
            if (packet.cmd === 'connack') {
                code = packet.returnCode;
            }
        });
        client.on('error', () => undefined); // a refusal is an 'error' too; the code is what counts
        const done = (): void => {
            client.end(true);
            resolve(code);
        };
        client.once('connect', done);
        client.once('close', done);
    });
}

/** Lines of `ps` for running (not zombie) beam.smp processes of this node (its name is in argv). */
function beamProcesses(broker: RabbitMqBroker): string[] {
    return execFileSync('ps', ['-eo', 'pid=,stat=,args='], { encoding: 'utf8' })
        .split('\n')
        .filter((line) => line.includes('beam.smp') && line.includes(broker.nodeName))
        .filter((line) => !/^\s*\d+\s+Z/.test(line));
}

describe('RabbitMQ test helper (rabbitmq_mqtt)', { skip: rabbitmqSkip(), timeout: 120_000 }, () => {
    let open: RabbitMqBroker | undefined;
    let secured: RabbitMqBroker | undefined;

    before(async () => {
        // Both boots in parallel: each takes 10-16 s, mostly Erlang loading code and a fixed
        // 3-6 s wait of the MQTT plugin.
        const [first, second] = await Promise.allSettled([startRabbitMq(), startRabbitMq({ passwords: PASSWORDS })]);
        open = first.status === 'fulfilled' ? first.value : undefined;
        secured = second.status === 'fulfilled' ? second.value : undefined;
        for (const result of [first, second]) {
            if (result.status === 'rejected') {
                throw result.reason;
            }
        }
    });

    after(async () => {
        await clients.endAll();
        await Promise.all([open?.cleanup(), secured?.cleanup()]);
    });

    it('starts a private node that takes anonymous MQTT.js connections and a QoS 1 round trip', async () => {
        assert.ok(open);
        assert.equal(open.kind, 'rabbitmq');
        assert.equal(open.url, `mqtt://127.0.0.1:${open.port}`);
        assert.match(open.nodeName, /^pip-mqtt-[0-9a-f]+@localhost$/);
        assert.notEqual(open.nodeName, secured?.nodeName);
        assert.ok(open.pid, 'the VM pid is known');
        assert.equal(beamProcesses(open).length, 1);
        await roundTrip(open.url);
        await clients.endAll();
    });

    it('restart() comes back on the same port, node name and data: clients connect again, a durable session survives', async (t) => {
        assert.ok(open);
        const { port, url, nodeName } = open;
        const pidBefore = open.pid;
        // A durable session (clean_session false) with a QoS 1 subscription and a message waiting.
        const clientId = `rabbitmq-restart-${Date.now()}`;
        const topic = uniqueTopic('rabbitmq-session');
        const sessionClient = await clients.connect(url, { clientId, clean: false });
        await sessionClient.subscribeAsync(topic, { qos: 1 });
        await sessionClient.endAsync();
        clients.delete(sessionClient);
        const publisher = await clients.connect(url);
        await publisher.publishAsync(topic, 'kept', { qos: 1 });
        await clients.endAll();

        const started = Date.now();
        await open.restart();
        t.diagnostic(`restart (graceful stop + start) took ${Date.now() - started} ms`);

        assert.equal(open.port, port);
        assert.equal(open.url, url);
        assert.equal(open.nodeName, nodeName);
        assert.notEqual(open.pid, pidBefore, 'a new VM');
        const resumed = clients.create(url, { clientId, clean: false });
        const message = nextMessage(resumed);
        const connack = await new Promise<boolean>((resolve, reject) => {
            resumed.once('connect', (packet) => resolve(packet.sessionPresent));
            resumed.once('error', reject);
        });
        assert.equal(connack, true, 'sessionPresent after the restart');
        assert.equal((await message).payload.toString(), 'kept');
        await roundTrip(url);
        await clients.endAll();
    });

    it('restartApp() bounces RabbitMQ inside the same VM: connections drop, clients connect again', async (t) => {
        assert.ok(open);
        const pidBefore = open.pid;
        const client = await clients.connect(open.url);
        const closed = new Promise<void>((resolve) => client.once('close', () => resolve()));
        const started = Date.now();
        await open.restartApp();
        t.diagnostic(`restartApp (stop_app + start_app) took ${Date.now() - started} ms`);
        await closed;
        assert.equal(open.pid, pidBefore, 'the same VM');
        assert.match(await open.rabbitmqctl('list_queues', 'name'), /^name/);
        await roundTrip(open.url);
        await clients.endAll();
    });

    it('with passwords: refuses bad or missing credentials (CONNACK 4) and accepts the users', async () => {
        assert.ok(secured);
        const url = secured.url;
        // RabbitMQ 3.10 answers every refused login with 4 (bad user name or password), never 5.
        assert.equal(await connackCode(url, { username: 'alice', password: 'wrong' }), 4);
        assert.equal(await connackCode(url, { username: 'nobody', password: 'x' }), 4);
        assert.equal(await connackCode(url), 4, 'anonymous');
        assert.equal(await connackCode(url, { username: 'guest', password: 'guest' }), 4, 'no guest user');
        assert.equal(await connackCode(url, { username: 'alice', password: PASSWORDS.alice }), 0);
        assert.equal(await connackCode(url, { username: 'bob', password: PASSWORDS.bob }), 0);
        await roundTrip(url, { username: 'bob', password: PASSWORDS.bob });
        await clients.endAll();
    });

    it('cleanup() leaves no process of the node and removes its folder', async (t) => {
        for (const broker of [open, secured]) {
            assert.ok(broker);
            const pid = broker.pid;
            assert.ok(pid);
            const started = Date.now();
            await broker.cleanup();
            t.diagnostic(`cleanup of ${broker.nodeName} took ${Date.now() - started} ms`);
            assert.deepEqual(beamProcesses(broker), []);
            assert.equal(broker.pid, undefined);
            assert.equal(existsSync(broker.dir), false);
            assert.equal(await connackCode(broker.url), undefined, 'nothing answers on the port');
        }
    });
});
