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
import { LogLevel } from 'pip-services3-components-nodex';
import { type IMessageQueue, type IMessageReceiver, MessageEnvelope } from 'pip-services3-messaging-nodex';

import { MqttConnection, MqttMessageQueue } from '../../src';
import { delay, uniqueTopic, waitFor } from '../helpers/brokers';
import type { TestCluster } from '../helpers/cluster';
import { type CapturingLogger, testReferences, uniqueClientId } from '../helpers/components';
import { type Fixture, fixture } from '../helpers/fixture';
import { NumberedStream } from '../helpers/numberedStream';
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
/** Hang guards: how long a step may take before the scenario fails. */
const STEP_MS = 60000;

/** What one scenario measured, for docs/clusters.md. */
interface ScenarioResult {
    cluster: string;
    settings: string;
    scenario: string;
    acknowledged: number;
    received: number;
    lost: number;
    duplicates: number;
    rejected: number;
    /** Milliseconds from the node loss to the subscriber being connected again (where measured). */
    reconnectMs?: number;
    /** What the suite expected: every acknowledged number, or every one outside the outage. */
    expected: 'all' | 'outside the outage';
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

/** A numbered stream's publisher and subscriber, whichever components carry them. */
interface Pair {
    stream: NumberedStream;
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
            await sub.subscribe(stream.topic, { qos: 1 }, stream);
            const pair: Pair = { stream, logger, subscriberConnected: () => sub.isConnected(), subscriberReconnects: () => sub.getStatus().reconnects };
            return { sub, pub, stream, pair };
        }

        /** Waits until `count` more numbers have been acknowledged. */
        async function progress(stream: NumberedStream, count: number): Promise<void> {
            const target = stream.counts().acknowledged + count;
            await waitFor(() => stream.counts().acknowledged >= target, STEP_MS, `${count} more acknowledged messages`);
        }

        /** Kills node `at` and measures how long the subscriber takes to be connected again (elsewhere). */
        async function killSubscriberNode(pair: Pair, at: number): Promise<number> {
            const killedAt = Date.now();
            await cluster.nodes[at].kill('SIGKILL');
            await waitFor(() => !pair.subscriberConnected(), 20000, 'the subscriber to notice');
            await waitFor(() => pair.subscriberConnected(), STEP_MS, 'the subscriber on another node');
            return Date.now() - killedAt;
        }

        /**
         * Starts the stream and runs it through a SIGKILL of node 1 (the subscriber's) and its restart;
         * resolves with the outage (the numbers published from the kill to the subscriber's return) and its length.
         */
        async function throughSubscriberNodeKill(pair: Pair): Promise<{ outage: [number, number]; reconnectMs: number }> {
            const { stream } = pair;
            stream.start();
            await progress(stream, 200);
            const lostFrom = stream.nextNumber;
            const reconnectMs = await killSubscriberNode(pair, 0);
            const outage: [number, number] = [lostFrom, stream.nextNumber];
            await progress(stream, 200);
            await cluster.nodes[0].start();
            await progress(stream, 200);
            return { outage, reconnectMs };
        }

        /**
         * Stops the stream and checks delivery: with a cluster that keeps sessions, every acknowledged
         * number; without, every number outside `outage` (the numbers published from just before the
         * loss, a window's worth, to the resubscription). No publish may have been rejected.
         */
        async function checkDelivery(t: TestContext, scenario: string, pair: Pair, outage: [number, number] | null, reconnectMs?: number): Promise<void> {
            const { stream } = pair;
            await stream.stop();
            const lossAllowed = !cluster.keepsSessions && outage !== null;
            const inOutage = (n: number): boolean => outage !== null && n >= outage[0] - WINDOW && n < outage[1];
            const done = (): boolean => (lossAllowed ? stream.missingNumbers(1 << 20).every(inOutage) : stream.counts().missing === 0);
            const complete = await waitFor(done, STEP_MS, 'every acknowledged number').then(() => true, () => false);
            const counts = stream.counts();
            const ok = complete && counts.retries === 0;
            record({
                cluster: cluster.kind, settings: cluster.settings, scenario, acknowledged: counts.acknowledged, received: counts.received,
                lost: counts.missing, duplicates: counts.duplicates, rejected: counts.retries, reconnectMs,
                expected: lossAllowed ? 'outside the outage' : 'all', ok,
            });
            t.diagnostic(`acknowledged ${counts.acknowledged}, received ${counts.received}, lost ${counts.missing}, duplicates ${counts.duplicates}, ` +
                `rejected ${counts.retries}, subscriber reconnects ${pair.subscriberReconnects()}` +
                (reconnectMs !== undefined ? `, connected again ${reconnectMs} ms after the loss` : ''));
            const outside = stream.missingNumbers(20).filter((n) => !inOutage(n) || !lossAllowed);
            assert.ok(complete, `missing ${counts.missing}${lossAllowed ? ' (outside the outage: ' + outside.join(', ') + ')' : ': ' + stream.missingNumbers().join(', ')}; ` +
                `the subscriber's warnings and errors: ${pair.logger.messages(LogLevel.Warn).join(' | ') || '-'}`);
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
            const { outage, reconnectMs } = await throughSubscriberNodeKill(pair);
            await checkDelivery(t, 'subscriber\'s node killed', pair, outage, reconnectMs);
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
            await checkDelivery(t, 'publisher\'s node killed', pair, null);
        });

        it('MqttConnection: a backlog the broker holds for the subscriber at the kill of its node arrives', async (t) => {
            const f = fixture(t);
            const { sub, stream, pair } = await connectionPair(f, 0, 1);
            stream.start();
            await progress(stream, 100);
            // The subscriber stops reading: the broker queues what it cannot send (its in-flight window, then the session).
            const socket = sub.getConnection()!.stream;
            socket.pause();
            const backlogFrom = stream.nextNumber;
            await progress(stream, 500);
            const backlog = stream.counts().missing;
            const reconnectMs = await killSubscriberNode(pair, 0);
            socket.resume();
            t.diagnostic(`backlog at the kill: ${backlog} acknowledged, not delivered`);
            await progress(stream, 100);
            await cluster.nodes[0].start();
            await checkDelivery(t, 'backlog at the kill', pair, [backlogFrom, stream.nextNumber], reconnectMs);
        });

        it('MqttConnection: every message of a rolling restart (each node stopped and started in turn)', async (t) => {
            const f = fixture(t);
            const { stream, pair } = await connectionPair(f, 0, 1);
            stream.start();
            const outageFrom = stream.nextNumber;
            for (const node of cluster.nodes) {
                await progress(stream, 150);
                await node.stop();
                await progress(stream, 150);
                await node.start();
            }
            await progress(stream, 150);
            await checkDelivery(t, 'rolling restart', pair, [outageFrom, stream.nextNumber]);
        });

        it('MqttConnection: an offline persistent session whose node dies keeps its backlog for the subscriber\'s return', async (t) => {
            const f = fixture(t);
            const { sub, stream, pair } = await connectionPair(f, 0, 1);
            stream.start();
            await progress(stream, 100);
            await sub.close(null);
            const offlineFrom = stream.nextNumber;
            await progress(stream, 300);
            await cluster.nodes[0].kill('SIGKILL');
            await progress(stream, 100);
            await stream.stop();
            await sub.open(null);
            await sub.subscribe(stream.topic, { qos: 1 }, stream);
            await cluster.nodes[0].start();
            await checkDelivery(t, 'offline session, its node dies', pair, [offlineFrom, stream.nextNumber]);
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
            const producer = f.closing(new MqttMessageQueue('jobs'));
            producer.configure(ConfigParams.fromTuples('topic', topic, 'options.qos', 1, ...overNodes(cluster, 1)));
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
            const pair: Pair = {
                stream, logger,
                subscriberConnected: () => connection.isConnected(),
                subscriberReconnects: () => connection.getStatus().reconnects,
            };
            const { outage, reconnectMs } = await throughSubscriberNodeKill(pair);
            await checkDelivery(t, 'queue consumer\'s node killed', pair, outage, reconnectMs);
        });
    });
}
