// The Aedes cluster of the cluster suites (aedesCluster.ts: three Aedes nodes on one private
// Redis) tried on itself: it starts, a node restarts on its port, a persistent session outlives
// its node, and numbered QoS 1 streams lose nothing through the loss of the subscriber's node and
// through a rolling restart. Each stream runs twice side by side: between two plain MQTT.js
// clients (failover with the `servers` option) and between two MqttConnections
// (`connections.1-3`), so that what goes wrong can be told apart: the broker, or our module.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';

import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { ConfigParams } from 'pip-services3-commons-nodex';
import { LogLevel } from 'pip-services3-components-nodex';

import { MqttConnection } from '../../src';
import { type AedesCluster, type AedesNode, aedesClusterSkip, startAedesCluster } from '../helpers/aedesCluster';
import { canConnect, uniqueTopic, waitFor } from '../helpers/brokers';
import { type CapturingLogger, testReferences, uniqueClientId } from '../helpers/components';
import { type Fixture, fixture } from '../helpers/fixture';
import { NumberedStream } from '../helpers/numberedStream';

/** As in the NATS suite: each of the 3 servers gets 10 s per attempt; reconnects from 200 ms, backing off to 2 s. */
const TIMEOUTS = ['options.connect_timeout', 30000, 'options.reconnect_timeout', 200, 'options.max_reconnect_timeout', 2000,
    'options.keepalive_timeout', 5000];
/** The plain MQTT.js clients get the same timing. */
const RAW_OPTIONS: IClientOptions = { protocolVersion: 4, connectTimeout: 10000, reconnectPeriod: 200, keepalive: 5 };

/** The nodes starting at `at`, in cluster order: the failover list of a client that starts there. */
function from(cluster: AedesCluster, at: number): AedesNode[] {
    return cluster.nodes.map((_, i) => cluster.nodes[(at + i) % cluster.nodes.length]);
}

/** An MqttConnection over the nodes, in that order (`connections.1-3`), with TIMEOUTS. */
function overNodes(nodes: readonly AedesNode[], ...tuples: unknown[]): MqttConnection {
    const connection = new MqttConnection();
    connection.configure(ConfigParams.fromTuples(...nodes.flatMap((node, i) => [`connections.${i + 1}.uri`, node.url]), ...TIMEOUTS, ...tuples));
    return connection;
}

/** A plain MQTT.js client with the nodes as its failover `servers`, connected to the first. */
async function rawClient(f: Fixture, nodes: readonly AedesNode[], options: IClientOptions): Promise<MqttClient> {
    const client = await mqtt.connectAsync({ ...RAW_OPTIONS, ...options, servers: nodes.map((node) => ({ host: '127.0.0.1', port: node.port })) });
    f.defer(() => client.endAsync(true));
    return client;
}

/** What a NumberedStream needs of its publisher. */
type StreamPublisher = Pick<MqttConnection, 'publish' | 'isOpen'>;

/** A plain MQTT.js client as the publisher of a NumberedStream. */
function rawPublisher(client: MqttClient): MqttConnection {
    const publisher: StreamPublisher = {
        publish: async (topic, data, options) => {
            await client.publishAsync(topic, data, options);
        },
        isOpen: () => !client.disconnecting,
    };
    return publisher as MqttConnection;
}

/** The RSS of a process in KiB (Linux), or NaN. */
function rssKiB(pid: number | undefined): number {
    try {
        return Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]);
    } catch {
        return NaN;
    }
}

/** The promise, or a rejection naming `what` after `ms` (a hang guard, not a timed assertion). */
function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no ${what} within ${ms} ms`)), ms);
    });
    return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** True while a process with this id exists. */
function alive(pid: number): boolean {
    try {
        process.kill(pid, 0);
        return true;
    } catch {
        return false;
    }
}

/** How many deliveries to `clientId` the nodes held back until its CONNACK, and at how many of its connects (see aedesNode.ts). */
function heldBack(cluster: AedesCluster, clientId: string): { deliveries: number; connects: number } {
    let deliveries = 0;
    let connects = 0;
    const line = new RegExp(`client ${clientId}: (\\d+) deliveries before its CONNACK held back`);
    for (const node of cluster.nodes) {
        for (const text of fs.readFileSync(node.logFile, 'utf8').split('\n')) {
            const match = line.exec(text);
            if (match) {
                deliveries += Number(match[1]);
                connects++;
            }
        }
    }
    return { deliveries, connects };
}

/** One numbered stream and its subscriber: what the scenarios drive and check. */
interface StreamPair {
    /** `MQTT.js` or `MqttConnection`. */
    readonly label: string;
    readonly stream: NumberedStream;
    readonly subscriberId: string;
    /** True while the subscriber is connected. */
    connected(): boolean;
    /** Connections the subscriber restored. */
    reconnects(): number;
    /** What the subscriber says when a number is missing. */
    notes(): string;
}

describe('Aedes cluster (3 nodes on one Redis): the helper, and QoS 1 streams through node losses', { skip: aedesClusterSkip(), timeout: 600000 }, () => {
    let cluster: AedesCluster;
    let startMs = 0;
    before(async () => {
        const started = Date.now();
        cluster = await startAedesCluster();
        startMs = Date.now() - started;
    });
    after(async () => { await cluster?.stop(); });

    /** Two plain MQTT.js clients: a persistent subscriber starting on node `subAt`, a publisher on `pubAt`. */
    async function rawPair(f: Fixture, subAt: number, pubAt: number): Promise<StreamPair> {
        const subscriberId = uniqueClientId('raw-sub');
        const sub = await rawClient(f, from(cluster, subAt), { clientId: subscriberId, clean: false });
        const pub = await rawClient(f, from(cluster, pubAt), { clientId: uniqueClientId('raw-pub'), clean: true });
        const stream = new NumberedStream(rawPublisher(pub), uniqueTopic('cluster'), 10);
        f.defer(() => stream.stop());
        sub.on('message', (topic, payload, packet) => stream.onMessage(topic, payload, packet));
        await sub.subscribeAsync(stream.topic, { qos: 1 });
        let reconnects = 0;
        sub.on('connect', () => reconnects++);
        return {
            label: 'MQTT.js', stream, subscriberId,
            connected: () => sub.connected,
            reconnects: () => reconnects,
            notes: () => `reconnecting ${String(sub.reconnecting)}`,
        };
    }

    /** Two MqttConnections, as the NATS suite has them: a persistent subscriber on node `subAt`, a publisher on `pubAt`. */
    async function modulePair(f: Fixture, subAt: number, pubAt: number): Promise<StreamPair> {
        const subscriberId = uniqueClientId('mod-sub');
        const sub = f.closing(overNodes(from(cluster, subAt), 'client_id', subscriberId, 'options.clean_session', false));
        const { references, logger } = testReferences();
        sub.setReferences(references);
        const pub = f.closing(overNodes(from(cluster, pubAt)));
        await sub.open(null);
        await pub.open(null);
        const stream = new NumberedStream(pub, uniqueTopic('cluster'), 10);
        f.defer(() => stream.stop());
        await sub.subscribe(stream.topic, { qos: 1 }, stream);
        return {
            label: 'MqttConnection', stream, subscriberId,
            connected: () => sub.isConnected(),
            reconnects: () => sub.getStatus().reconnects,
            notes: () => `subscriptions ${sub.getSubscriptions().length}; warnings: ${warnings(logger)}`,
        };
    }

    function warnings(logger: CapturingLogger): string {
        return logger.messages(LogLevel.Warn).join(' | ') || '-';
    }

    /** Both pairs, side by side on the same nodes. */
    async function pairs(f: Fixture, subAt: number, pubAt: number): Promise<StreamPair[]> {
        return [await rawPair(f, subAt, pubAt), await modulePair(f, subAt, pubAt)];
    }

    /** Waits until every stream has `count` more acknowledged messages. */
    async function progress(all: readonly StreamPair[], count: number): Promise<void> {
        await Promise.all(all.map(async ({ stream }) => {
            const target = stream.counts().acknowledged + count;
            await waitFor(() => stream.counts().acknowledged >= target, 60000, `${count} more acknowledged messages`);
        }));
    }

    /** Stops the streams, reports each one's counts, and (where the cluster keeps sessions) checks that nothing acknowledged was lost. */
    async function checkComplete(t: TestContext, all: readonly StreamPair[]): Promise<void> {
        await Promise.all(all.map(({ stream }) => stream.stop()));
        await waitFor(() => all.every(({ stream }) => stream.counts().missing === 0), 60000, 'every acknowledged number').catch(() => undefined);
        const failures: string[] = [];
        for (const pair of all) {
            const counts = pair.stream.counts();
            const held = heldBack(cluster, pair.subscriberId);
            t.diagnostic(`${pair.label}: acknowledged ${counts.acknowledged}, received ${counts.received}, duplicates ${counts.duplicates}, ` +
                `lost ${counts.missing}; subscriber reconnects ${pair.reconnects()}, deliveries held back until the CONNACK ${held.deliveries} ` +
                `(at ${held.connects} connects), still queued in Redis ${await cluster.queuedFor(pair.subscriberId)}`);
            if (counts.missing > 0) failures.push(`${pair.label}: lost ${counts.missing}: ${pair.stream.missingNumbers().join(', ')}; ${pair.notes()}`);
            if (counts.retries > 0) failures.push(`${pair.label}: publishes rejected: ${pair.stream.rejections().join('; ')}`);
        }
        if (cluster.keepsSessions) assert.deepEqual(failures, []);
    }

    it('starts three nodes on one Redis; a killed node starts again on its port; a persistent session outlives its node', { timeout: 120000 }, async (t) => {
        const f = fixture(t);
        const memory = [...cluster.nodes.map((node) => `${node.name} ${rssKiB(node.pid)}`), `redis ${rssKiB(cluster.redis.pid)}`];
        t.diagnostic(`fresh start of Redis and 3 nodes: ${startMs} ms; RSS in KiB: ${memory.join(', ')}`);
        for (const node of cluster.nodes) assert.ok(await canConnect(node.port), `${node.name} listens`);

        // A persistent session with a QoS 1 subscription on the first node; a message queued for it while it is away.
        const [first, second, third] = cluster.nodes;
        const clientId = uniqueClientId('keep');
        const topic = uniqueTopic('cluster');
        const away = await mqtt.connectAsync(first.url, { clientId, clean: false, reconnectPeriod: 0 });
        await within(away.subscribeAsync(topic, { qos: 1 }), 30000, 'SUBACK');
        await within(away.endAsync(), 30000, 'end of the connection');
        const publisher = await mqtt.connectAsync(third.url, { reconnectPeriod: 0 });
        f.defer(() => publisher.endAsync(true));
        await within(publisher.publishAsync(topic, 'queued', { qos: 1 }), 30000, 'PUBACK');

        // The node it lived on dies, and starts again.
        await first.kill();
        assert.equal(await canConnect(first.port), false, `${first.name} is gone`);
        const restarting = Date.now();
        await first.start();
        t.diagnostic(`restart of a killed node: ${Date.now() - restarting} ms (same port ${first.port})`);

        // The session resumes on another node, with the message queued for it.
        const back = mqtt.connect(second.url, { clientId, clean: false, reconnectPeriod: 0, manualConnect: true });
        f.defer(() => back.endAsync(true));
        const received = new Promise<string>((resolve) => back.once('message', (_topic, payload) => resolve(payload.toString())));
        const connack = new Promise<boolean>((resolve) => back.once('connect', (packet) => resolve(packet.sessionPresent)));
        back.connect();
        assert.equal(await within(connack, 30000, 'CONNACK'), true, 'the session is present on another node');
        assert.equal(await within(received, 30000, 'queued message'), 'queued');
        assert.equal(cluster.keepsSessions, true);
        t.diagnostic(`settings: ${cluster.settings}`);
    });

    it('loses no acknowledged QoS 1 message when the subscriber\'s node is killed (SIGKILL) and restarted', { timeout: 300000 }, async (t) => {
        const f = fixture(t);
        const all = await pairs(f, 0, 1);
        for (const { stream } of all) stream.start();
        await progress(all, 200);
        await cluster.nodes[0].kill('SIGKILL');
        await waitFor(() => all.every((pair) => !pair.connected()), 20000, 'the subscribers to notice');
        await waitFor(() => all.every((pair) => pair.connected()), 60000, 'the subscribers on another node');
        await progress(all, 200);
        await cluster.nodes[0].start();
        await progress(all, 200);
        await checkComplete(t, all);
    });

    it('loses no acknowledged QoS 1 message in a rolling restart (each node stopped and started in turn)', { timeout: 300000 }, async (t) => {
        const f = fixture(t);
        const all = await pairs(f, 0, 1);
        for (const { stream } of all) stream.start();
        for (const node of cluster.nodes) {
            await progress(all, 150);
            await node.stop();
            await progress(all, 150);
            await node.start();
        }
        await progress(all, 150);
        await checkComplete(t, all);
    });

    it('stop() ends Redis and every node and removes their folders', { timeout: 120000 }, async (t) => {
        const pids = [cluster.redis.pid, ...cluster.nodes.map((node) => node.pid)].filter((pid): pid is number => pid !== undefined);
        const dirs = [cluster.redis.logFile, ...cluster.nodes.map((node) => node.logFile)].map((file) => path.dirname(file));
        assert.equal(pids.length, 4);
        const memory = [...cluster.nodes.map((node) => `${node.name} ${rssKiB(node.pid)}`), `redis ${rssKiB(cluster.redis.pid)}`];
        t.diagnostic(`RSS in KiB after the streams: ${memory.join(', ')}`);
        await cluster.stop();
        assert.deepEqual(pids.filter(alive), [], 'no process left');
        assert.deepEqual(dirs.filter((dir) => fs.existsSync(dir)), [], 'no folder left');
    });
});
