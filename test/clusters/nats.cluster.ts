// MqttConnection over a three-node NATS cluster (`connections.1-3`): numbered QoS 1 streams
// through the loss of a node. NATS keeps a persistent session on the other nodes (its MQTT
// streams have three replicas), so nothing may be lost; duplicates are counted.
import assert from 'node:assert/strict';
import { after, before, describe, it, type TestContext } from 'node:test';

import { ConfigParams } from 'pip-services3-commons-nodex';
import { LogLevel } from 'pip-services3-components-nodex';

import { MqttConnection } from '../../src';
import { uniqueTopic, waitFor } from '../helpers/brokers';
import { type CapturingLogger, testReferences, uniqueClientId } from '../helpers/components';
import { type Fixture, fixture } from '../helpers/fixture';
import { type NatsBroker, natsSkip } from '../helpers/nats';
import { type NatsCluster, startNatsCluster } from '../helpers/natsCluster';
import { NumberedStream } from '../helpers/numberedStream';

/** Connection settings that survive NATS's leader election (~8 s): each of 3 servers gets 10 s per attempt. */
const TIMEOUTS = ['options.connect_timeout', 30000, 'options.reconnect_timeout', 200, 'options.max_reconnect_timeout', 2000,
    'options.keepalive_timeout', 5000];

/** An MqttConnection over the nodes, in that order (`connections.1-3`), with TIMEOUTS. */
function overNodes(nodes: readonly NatsBroker[], ...tuples: unknown[]): MqttConnection {
    const connection = new MqttConnection();
    connection.configure(ConfigParams.fromTuples(...nodes.flatMap((node, i) => [`connections.${i + 1}.uri`, node.url]), ...TIMEOUTS, ...tuples));
    return connection;
}

describe('MqttConnection on a NATS cluster (3 nodes, JetStream replicas 3)', { skip: natsSkip(), timeout: 300000 }, () => {
    let cluster: NatsCluster;
    before(async () => { cluster = await startNatsCluster(); });
    after(async () => { await cluster?.stop(); });

    /** A persistent subscriber starting on node `subAt`, a publisher on node `pubAt`, and a numbered stream between them. */
    async function streamPair(f: Fixture, subAt: number, pubAt: number) {
        const order = (at: number): NatsBroker[] => [0, 1, 2].map((i) => cluster.nodes[(at + i) % 3]);
        const sub = f.closing(overNodes(order(subAt), 'client_id', uniqueClientId('cluster-sub'), 'options.clean_session', false));
        const { references, logger } = testReferences();
        sub.setReferences(references);
        const pub = f.closing(overNodes(order(pubAt)));
        await sub.open(null);
        await pub.open(null);
        const stream = new NumberedStream(pub, uniqueTopic('cluster'), 10);
        f.defer(() => stream.stop());
        await sub.subscribe(stream.topic, { qos: 1 }, stream);
        const progress = async (count: number): Promise<void> => {
            const target = stream.counts().acknowledged + count;
            await waitFor(() => stream.counts().acknowledged >= target, 60000, `${count} more acknowledged messages`);
        };
        return { sub, pub, stream, progress, logger };
    }

    /** Stops the stream and checks that every acknowledged number arrived and no publish was rejected. */
    async function checkComplete(t: TestContext, stream: NumberedStream, sub: MqttConnection, note: string, logger?: CapturingLogger): Promise<void> {
        await stream.stop();
        const complete = await waitFor(() => stream.counts().missing === 0, 60000, 'every acknowledged number').then(() => true, () => false);
        const counts = stream.counts();
        t.diagnostic(`acknowledged ${counts.acknowledged}, received ${counts.received}, duplicates ${counts.duplicates}, ` +
            `rejected ${counts.retries}, subscriber reconnects ${sub.getStatus().reconnects}, subscriptions ${sub.getSubscriptions().length}${note}`);
        assert.ok(complete, `missing ${counts.missing}: ${stream.missingNumbers().join(', ')}; ` +
            `the subscriber's warnings and errors: ${logger?.messages(LogLevel.Warn).join(' | ') ?? '-'}`);
        assert.equal(counts.retries, 0, `publishes rejected: ${stream.rejections().join('; ')}`);
    }

    it('loses no acknowledged QoS 1 message of a numbered stream when the subscriber\'s node is killed (SIGKILL) and restarted', async (t) => {
        const f = fixture(t);
        const { sub, stream, progress } = await streamPair(f, 0, 1);
        stream.start();
        await progress(200);
        const killedAt = Date.now();
        await cluster.nodes[0].kill('SIGKILL');
        await waitFor(() => !sub.isConnected(), 20000, 'the subscriber to notice');
        await waitFor(() => sub.isConnected(), 60000, 'the subscriber on another node');
        const failoverMs = Date.now() - killedAt;
        await progress(200);
        await cluster.nodes[0].start();
        await progress(200);
        await checkComplete(t, stream, sub, `, back on another node after ${failoverMs} ms`);
    });

    it('loses no acknowledged QoS 1 message when the publisher\'s node is killed (SIGKILL) and restarted', async (t) => {
        const f = fixture(t);
        const { sub, pub, stream, progress } = await streamPair(f, 0, 1);
        stream.start();
        await progress(200);
        await cluster.nodes[1].kill('SIGKILL');
        await waitFor(() => !pub.isConnected(), 20000, 'the publisher to notice');
        await progress(200);
        await cluster.nodes[1].start();
        await progress(200);
        await checkComplete(t, stream, sub, `, publisher reconnects ${pub.getStatus().reconnects}`);
    });

    it('delivers every message of a rolling restart (each node stopped and started in turn)', async (t) => {
        const f = fixture(t);
        const { sub, stream, progress, logger } = await streamPair(f, 0, 1);
        stream.start();
        for (const node of cluster.nodes) {
            await progress(150);
            await node.stop();
            await progress(150);
            await node.start();
        }
        await progress(150);
        await checkComplete(t, stream, sub, '', logger);
    });

    it('keeps an offline persistent session through the loss of its node: the backlog arrives after the subscriber comes back', async (t) => {
        const f = fixture(t);
        const { sub, stream, progress } = await streamPair(f, 0, 1);
        stream.start();
        await progress(100);
        // The subscriber goes away (its session stays), a backlog builds at the broker, and the node it was on dies.
        await sub.close(null);
        await progress(300);
        await cluster.nodes[0].kill('SIGKILL');
        await progress(100);
        await stream.stop();
        await sub.open(null);
        await sub.subscribe(stream.topic, { qos: 1 }, stream);
        await cluster.nodes[0].start();
        await checkComplete(t, stream, sub, '');
    });
});
