// The cluster scenarios, the same on every cluster (one file per cluster calls clusterScenarios):
// MqttConnection and MqttMessageQueue over `connections.1-3`, numbered QoS 1 streams through node
// losses. Where the cluster keeps a persistent session on its other nodes (TestCluster.keepsSessions)
// nothing acknowledged may be lost; where it does not, the connection must find the session gone,
// say so, resubscribe, and lose nothing published outside the outage. Duplicates are counted.
// Each scenario appends its figures to the file named by env CLUSTER_RESULTS (one JSON line each),
// from which scripts/test-clusters.mjs writes docs/clusters.md.
import assert from 'node:assert/strict';
import { appendFileSync } from 'node:fs';
import { after, before, describe, it, type TestContext } from 'node:test';

import { ConfigParams, References } from 'pip-services3-commons-nodex';
import type { MqttClient } from 'mqtt';
import { LogLevel } from 'pip-services3-components-nodex';
import { type IMessageQueue, type IMessageReceiver, MessageEnvelope } from 'pip-services3-messaging-nodex';

import { MqttConnection, MqttMessageQueue } from '../../src';
import { delay, uniqueTopic, waitFor } from '../helpers/brokers';
import type { TestCluster } from '../helpers/cluster';
import { type CapturingLogger, testReferences, uniqueClientId } from '../helpers/components';
import { type Fixture, fixture } from '../helpers/fixture';
import { NumberedStream, WireTap } from '../helpers/numberedStream';
import { CONNECTION, COUNTERS, LOGGER } from '../helpers/queues';

/**
 * Connection settings for clusters: 30 s for open() (10 s per attempt for each of three servers,
 * the whole 30 s once a node accepted: a NATS leader election takes ~8 s), quick reconnects, and a
 * keepalive that notices a dead node within seconds.
 */
const TIMEOUTS = ['options.connect_timeout', 30000, 'options.reconnect_timeout', 200, 'options.max_reconnect_timeout', 2000,
    'options.keepalive_timeout', 5000];
/** Publishes in flight per stream. */
const WINDOW = 10;
/**
 * How many of the last numbers before the loss of the publisher's connection its node may still
 * have held unforwarded (where the cluster loses those, see TestCluster.losesAtPublisherLoss):
 * Aedes was seen 20 behind, NATS lost up to 39 acknowledged in its last 20 ms.
 */
const PUBLISHER_NODE_HOLDS = 5 * WINDOW;
/** Hang guards: how long a step may take before the scenario fails. */
const STEP_MS = 60000;

/** What one scenario measured, for docs/clusters.md. */
interface ScenarioResult {
    cluster: string;
    settings: string;
    keepsSessions: boolean;
    losesAtPublisherLoss?: string;
    scenario: string;
    acknowledged: number;
    received: number;
    lost: number;
    /** Of those, numbers that reached the subscriber's client and not its listener (always 0 where the suite passes). */
    lostByModule: number;
    duplicates: number;
    rejected: number;
    /** Milliseconds from the node loss to the subscriber being connected again (where measured). */
    reconnectMs?: number;
    /** What the suite expected: every acknowledged number, every one outside the outage, or all but those in flight at a publisher's node kill. */
    expected: 'all' | 'outside the outage' | 'all but in flight at the kill';
    ok: boolean;
}

function record(result: ScenarioResult): void {
    const file = process.env.CLUSTER_RESULTS;
    if (file) appendFileSync(file, `${JSON.stringify(result)}\n`);
}

/** The node indexes in the order a client starting on node `at` lists them (connections.1 = node `at`). */
function order(cluster: TestCluster, at: number): string[] {
    return cluster.nodes.map((_, i) => cluster.nodes[(at + i) % cluster.nodes.length].url);
}

/** The configuration tuples of `connections.1-N` over the nodes, starting at node `at`, with TIMEOUTS. */
function overNodes(cluster: TestCluster, at: number): unknown[] {
    return [...order(cluster, at).flatMap((url, i) => [`connections.${i + 1}.uri`, url]), ...TIMEOUTS];
}

/**
 * A loss of a client's connection: `session`, the subscriber's (its session is gone where the
 * cluster does not keep sessions); `publisher`, the publisher's (what its node acknowledged and had
 * not passed on is gone where the cluster loses that: TestCluster.losesAtPublisherLoss). What it
 * may take with it: a session, the numbers acknowledged and not yet received at the loss
 * (`inFlight`) and those published from a window before it; a publisher's node, the last
 * PUBLISHER_NODE_HOLDS numbers before it; and for both, those published until the client was back (`to`).
 */
interface Outage {
    readonly kind: 'session' | 'publisher';
    readonly inFlight: ReadonlySet<number>;
    readonly from: number;
    to: number;
}

/**
 * Watches the clients of a stream: every close of a subscriber's or publisher's MQTT.js client is
 * an outage until its next connection, and what reached the subscriber's clients and what they
 * acknowledged (WireTap) tells who lost a number: a number a client acknowledged and its listener
 * never got was lost by the module, never allowed.
 */
class LossWatch {
    public readonly outages: Outage[] = [];
    private readonly _taps: WireTap[] = [];
    private _offline: Outage | null = null;

    public constructor(private readonly _stream: NumberedStream) {}

    /** Follows a subscriber's client (a new one after each open()). */
    public subscriber(client: MqttClient): void {
        this.endOffline();
        this._taps.push(new WireTap(client, this._stream.topic));
        this.follow(client, 'session');
    }

    /** Follows a publisher's client. */
    public publisher(client: MqttClient): void {
        this.follow(client, 'publisher');
    }

    /** The subscriber closes on purpose (close()): an outage of its session until it follows a new client. */
    public closing(): void {
        this._offline = this.begin('session');
    }

    public acknowledged(n: number): boolean {
        return this._taps.some((tap) => tap.acknowledged(n));
    }

    private endOffline(): void {
        if (this._offline) this._offline.to = this._stream.nextNumber;
        this._offline = null;
    }

    private begin(kind: Outage['kind']): Outage {
        const stream = this._stream;
        // A session takes all it queued with it; a publisher's node only what it took last, still on its way.
        const outage: Outage = kind === 'session'
            ? { kind, inFlight: new Set(stream.missingNumbers(1 << 20)), from: stream.nextNumber - WINDOW, to: Number.MAX_SAFE_INTEGER }
            : { kind, inFlight: new Set(), from: stream.nextNumber - PUBLISHER_NODE_HOLDS, to: Number.MAX_SAFE_INTEGER };
        this.outages.push(outage);
        return outage;
    }

    private follow(client: MqttClient, kind: Outage['kind']): void {
        let current: Outage | null = null;
        client.on('close', () => { current ??= this.begin(kind); });
        client.on('connect', () => {
            if (current) current.to = this._stream.nextNumber;
            current = null;
        });
    }
}

/** A numbered stream's publisher and subscriber, whichever components carry them. */
interface Pair {
    stream: NumberedStream;
    watch: LossWatch;
    /** Whether the subscriber is connected now. */
    subscriberConnected(): boolean;
    subscriberReconnects(): number;
    logger: CapturingLogger;
}

/**
 * Defines the scenarios on a cluster started by `start` (once for the describe block; each scenario
 * leaves every node running).
 */
export function clusterScenarios(title: string, skip: string | false, start: () => Promise<TestCluster>): void {
    describe(title, { skip, timeout: 600000 }, () => {
        let cluster: TestCluster;
        before(async () => { cluster = await start(); });
        after(async () => { await cluster?.stop(); });

        /** A persistent MqttConnection subscriber starting on node `subAt`, a publisher on node `pubAt`, a stream between them. */
        async function connectionPair(f: Fixture, subAt: number, pubAt: number) {
            const sub = f.closing(new MqttConnection());
            sub.configure(ConfigParams.fromTuples(...overNodes(cluster, subAt), 'client_id', uniqueClientId('cluster-sub'), 'options.clean_session', false));
            const { references, logger } = testReferences();
            sub.setReferences(references);
            const pub = f.closing(new MqttConnection());
            pub.configure(ConfigParams.fromTuples(...overNodes(cluster, pubAt)));
            const pubReporting = testReferences();
            pub.setReferences(pubReporting.references);
            f.defer(() => { if (process.env.CLUSTER_DEBUG) console.log('publisher log:\n' + pubReporting.logger.text()); });
            await sub.open(null);
            await pub.open(null);
            const stream = new NumberedStream(pub, uniqueTopic('cluster'), WINDOW);
            f.defer(() => stream.stop());
            const watch = new LossWatch(stream);
            watch.subscriber(sub.getConnection()!);
            watch.publisher(pub.getConnection()!);
            await sub.subscribe(stream.topic, { qos: 1 }, stream);
            const pair: Pair = { stream, watch, logger, subscriberConnected: () => sub.isConnected(), subscriberReconnects: () => sub.getStatus().reconnects };
            return { sub, pub, stream, pair };
        }

        /** Waits until `count` more numbers have been acknowledged. */
        async function progress(stream: NumberedStream, count: number): Promise<void> {
            const target = stream.counts().acknowledged + count;
            await waitFor(() => stream.counts().acknowledged >= target, STEP_MS, `${count} more acknowledged messages`);
        }

        /** Kills node `at` (then calls `killed`) and measures how long the subscriber takes to be connected again (elsewhere). */
        async function killSubscriberNode(pair: Pair, at: number, killed = (): void => undefined): Promise<number> {
            const killedAt = Date.now();
            await cluster.nodes[at].kill('SIGKILL');
            killed();
            await waitFor(() => !pair.subscriberConnected(), 20000, 'the subscriber to notice');
            await waitFor(() => pair.subscriberConnected(), STEP_MS, 'the subscriber on another node');
            return Date.now() - killedAt;
        }

        /**
         * Starts the stream and runs it through a SIGKILL of node 1 (the subscriber's) and its restart;
         * resolves with the time from the kill to the subscriber's return.
         */
        async function throughSubscriberNodeKill(pair: Pair): Promise<number> {
            const { stream } = pair;
            stream.start();
            await progress(stream, 200);
            const reconnectMs = await killSubscriberNode(pair, 0);
            await progress(stream, 200);
            await cluster.nodes[0].start();
            await progress(stream, 200);
            return reconnectMs;
        }

        /** Whether the cluster may lose what an outage of this kind left in flight (see Outage). */
        function mayLose(outage: Outage): boolean {
            return outage.kind === 'session' ? !cluster.keepsSessions : cluster.losesAtPublisherLoss !== undefined;
        }

        /**
         * Stops the stream and checks delivery. A number may be missing only where the cluster is
         * known to lose it: in an outage it may lose (see Outage and mayLose), and only when no
         * client of the subscriber acknowledged it: a number acknowledged and never received was lost
         * by the module, never allowed. No publish may have been rejected.
         */
        async function checkDelivery(t: TestContext, scenario: string, pair: Pair, reconnectMs?: number): Promise<void> {
            const { stream, watch } = pair;
            await stream.stop();
            const allowed = watch.outages.filter(mayLose);
            const excused = (n: number): boolean => !watch.acknowledged(n) && allowed.some((o) => o.inFlight.has(n) || (n >= o.from && n < o.to));
            const done = (): boolean => stream.missingNumbers(1 << 20).every(excused);
            const complete = await waitFor(done, STEP_MS, 'every acknowledged number').then(() => true, () => false);
            const counts = stream.counts();
            const missing = stream.missingNumbers(1 << 20);
            const byModule = missing.filter((n) => watch.acknowledged(n));
            const ok = complete && counts.retries === 0;
            record({
                cluster: cluster.kind, settings: cluster.settings, keepsSessions: cluster.keepsSessions,
                losesAtPublisherLoss: cluster.losesAtPublisherLoss, scenario, acknowledged: counts.acknowledged, received: counts.received,
                lost: counts.missing, lostByModule: byModule.length, duplicates: counts.duplicates, rejected: counts.retries, reconnectMs,
                expected: !allowed.some((o) => o.kind === 'session') ? (allowed.length === 0 ? 'all' : 'all but in flight at the kill') : 'outside the outage',
                ok,
            });
            t.diagnostic(`acknowledged ${counts.acknowledged}, received ${counts.received}, lost ${counts.missing} (by the module ${byModule.length}), ` +
                `duplicates ${counts.duplicates}, rejected ${counts.retries}, subscriber reconnects ${pair.subscriberReconnects()}, ` +
                `outages ${watch.outages.map((o) => `${o.kind} ${o.from}-${o.to === Number.MAX_SAFE_INTEGER ? 'end' : o.to}`).join(', ') || 'none'}` +
                (reconnectMs !== undefined ? `, connected again ${reconnectMs} ms after the loss` : ''));
            const unexcused = missing.filter((n) => !excused(n)).slice(0, 20);
            assert.ok(complete, `missing ${counts.missing}, not excused: ${unexcused.join(', ')}` +
                (byModule.length > 0 ? ` (${byModule.length} acknowledged by the subscriber's client, not received by its listener)` : '') +
                `; the subscriber's warnings and errors: ${pair.logger.messages(LogLevel.Warn).join(' | ') || '-'}`);
            assert.equal(counts.retries, 0, `publishes rejected: ${stream.rejections().join('; ')}`);
        }

        /** Where sessions are lost with their node: the subscriber was told so, once per reconnect that found none. */
        function checkSessionLossNoticed(pair: Pair): void {
            if (cluster.keepsSessions) return;
            const said = pair.logger.messages(LogLevel.Info).filter((m) => m.includes('the broker had no session'));
            assert.ok(said.length >= 1, 'the subscriber logged that the broker had no session');
        }

        it('MqttConnection: no acknowledged QoS 1 message lost when the subscriber\'s node is killed (SIGKILL) and restarted', async (t) => {
            const f = fixture(t);
            const { pair } = await connectionPair(f, 0, 1);
            const reconnectMs = await throughSubscriberNodeKill(pair);
            await checkDelivery(t, 'subscriber\'s node killed', pair, reconnectMs);
            checkSessionLossNoticed(pair);
        });

        it('MqttConnection: no acknowledged QoS 1 message lost when the publisher\'s node is killed (SIGKILL) and restarted', async (t) => {
            const f = fixture(t);
            const { stream, pub, pair } = await connectionPair(f, 0, 1);
            stream.start();
            await progress(stream, 200);
            await cluster.nodes[1].kill('SIGKILL');
            await waitFor(() => !pub.isConnected(), 20000, 'the publisher to notice');
            await progress(stream, 200);
            await cluster.nodes[1].start();
            await progress(stream, 200);
            await checkDelivery(t, 'publisher\'s node killed', pair);
        });

        it('MqttConnection: a backlog the broker holds for the subscriber at the kill of its node arrives', async (t) => {
            const f = fixture(t);
            const { sub, stream, pair } = await connectionPair(f, 0, 1);
            stream.start();
            await progress(stream, 100);
            // The subscriber stops reading: the broker queues what it cannot send (its in-flight window, then the session).
            const socket = sub.getConnection()!.stream;
            socket.pause();
            await progress(stream, 500);
            const backlog = stream.counts().missing;
            // Reading again as the node dies: a paused socket would see the close only at the keepalive timeout.
            const reconnectMs = await killSubscriberNode(pair, 0, () => socket.resume());
            t.diagnostic(`backlog at the kill: ${backlog} acknowledged, not delivered`);
            await progress(stream, 100);
            await cluster.nodes[0].start();
            await checkDelivery(t, 'backlog at the kill', pair, reconnectMs);
        });

        it('MqttConnection: every message of a rolling restart (each node stopped and started in turn)', async (t) => {
            const f = fixture(t);
            const { sub, pub, stream, pair } = await connectionPair(f, 0, 1);
            stream.start();
            for (const node of cluster.nodes) {
                await progress(stream, 150);
                await node.stop();
                await waitFor(() => sub.isConnected() && pub.isConnected(), STEP_MS, 'both connected after the stop');
                await progress(stream, 150);
                await node.start();
            }
            await progress(stream, 150);
            await checkDelivery(t, 'rolling restart', pair);
        });

        it('MqttConnection: an offline persistent session whose node dies keeps its backlog for the subscriber\'s return', async (t) => {
            const f = fixture(t);
            const { sub, stream, pair } = await connectionPair(f, 0, 1);
            stream.start();
            await progress(stream, 100);
            await sub.close(null);
            pair.watch.closing();
            await progress(stream, 300);
            await cluster.nodes[0].kill('SIGKILL');
            await progress(stream, 100);
            await stream.stop();
            await sub.open(null);
            pair.watch.subscriber(sub.getConnection()!);
            await sub.subscribe(stream.topic, { qos: 1 }, stream);
            await cluster.nodes[0].start();
            await checkDelivery(t, 'offline session, its node dies', pair);
        });

        it('MqttMessageQueue: no acknowledged message lost when the consumer\'s node is killed (listen, acknowledged after processing)', async (t) => {
            const f = fixture(t);
            const { logger, counters } = testReferences();
            // The consumer's connection, shared through the references as a service would configure it.
            const connection = f.closing(new MqttConnection());
            connection.configure(ConfigParams.fromTuples(...overNodes(cluster, 0), 'client_id', uniqueClientId('cluster-consumer'),
                'options.clean_session', false));
            const references = References.fromTuples(LOGGER, logger, COUNTERS, counters, CONNECTION, connection);
            connection.setReferences(references);
            const topic = uniqueTopic('cluster-queue');
            const consumer = f.closing(new MqttMessageQueue('jobs'));
            consumer.configure(ConfigParams.fromTuples('topic', topic, 'options.qos', 1, 'options.autosubscribe', true));
            consumer.setReferences(references);
            await connection.open(null);
            // The producer's connection too, so that its losses are watched.
            const producerConnection = f.closing(new MqttConnection());
            producerConnection.configure(ConfigParams.fromTuples(...overNodes(cluster, 1)));
            const producer = f.closing(new MqttMessageQueue('jobs'));
            producer.configure(ConfigParams.fromTuples('topic', topic, 'options.qos', 1));
            producer.setReferences(References.fromTuples(CONNECTION, producerConnection));
            await producerConnection.open(null);
            await consumer.open(null);
            await producer.open(null);
            const stream = new NumberedStream({
                publish: (_topic, data) => producer.send(null, new MessageEnvelope('cluster', 'job', data)),
                isOpen: () => producer.isOpen(),
            }, topic, WINDOW);
            f.defer(() => stream.stop());
            const receiver: IMessageReceiver = {
                receiveMessage: async (envelope: MessageEnvelope, _queue: IMessageQueue) => {
                    // Processing takes a moment: messages are in flight, unacknowledged, when the node dies.
                    await delay(1);
                    stream.receive(envelope.getMessageAsString());
                },
            };
            consumer.listen(null, receiver);
            f.defer(() => consumer.endListen(null));
            const watch = new LossWatch(stream);
            watch.subscriber(connection.getConnection()!);
            watch.publisher(producerConnection.getConnection()!);
            const pair: Pair = {
                stream, logger, watch,
                subscriberConnected: () => connection.isConnected(),
                subscriberReconnects: () => connection.getStatus().reconnects,
            };
            const reconnectMs = await throughSubscriberNodeKill(pair);
            await checkDelivery(t, 'queue consumer\'s node killed', pair, reconnectMs);
        });
    });
}
