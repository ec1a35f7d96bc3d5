// MqttConnection over a three-node NATS cluster (`connections.1-3`): numbered QoS 1 streams
// through the loss of a node. NATS keeps a persistent session on the other nodes (its MQTT
// streams have three replicas), so nothing may be lost; duplicates are counted.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { ConfigParams } from 'pip-services3-commons-nodex';

import { MqttConnection } from '../../src';
import { uniqueTopic, waitFor } from '../helpers/brokers';
import { uniqueClientId } from '../helpers/components';
import { fixture } from '../helpers/fixture';
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

    it('loses no acknowledged QoS 1 message of a numbered stream when the subscriber\'s node is killed (SIGKILL) and restarted', async (t) => {
        const f = fixture(t);
        const [first, second, third] = cluster.nodes;
        // The subscriber starts on node 1, the publisher on node 2.
        const sub = f.closing(overNodes([first, second, third], 'client_id', uniqueClientId('cluster-sub'), 'options.clean_session', false));
        const pub = f.closing(overNodes([second, third, first]));
        await sub.open(null);
        await pub.open(null);
        const stream = new NumberedStream(pub, uniqueTopic('cluster'), 10);
        f.defer(() => stream.stop());
        await sub.subscribe(stream.topic, { qos: 1 }, stream);
        stream.start();
        const progress = async (count: number): Promise<void> => {
            const target = stream.counts().acknowledged + count;
            await waitFor(() => stream.counts().acknowledged >= target, 60000, `${count} more acknowledged messages`);
        };
        await progress(200);
        const killedAt = Date.now();
        await first.kill('SIGKILL');
        await waitFor(() => !sub.isConnected(), 20000, 'the subscriber to notice');
        await waitFor(() => sub.isConnected(), 60000, 'the subscriber on another node');
        const failoverMs = Date.now() - killedAt;
        await progress(200);
        await first.start();
        await progress(200);
        await stream.stop();
        const complete = await waitFor(() => stream.counts().missing === 0, 60000, 'every acknowledged number').then(() => true, () => false);
        const counts = stream.counts();
        t.diagnostic(`acknowledged ${counts.acknowledged}, received ${counts.received}, duplicates ${counts.duplicates}, ` +
            `rejected ${counts.retries}, subscriber back on another node after ${failoverMs} ms, reconnects ${sub.getStatus().reconnects}`);
        assert.ok(complete, `missing ${counts.missing}: ${stream.missingNumbers().join(', ')}`);
        assert.equal(counts.retries, 0, `publishes rejected: ${stream.rejections().join('; ')}`);
    });
});
