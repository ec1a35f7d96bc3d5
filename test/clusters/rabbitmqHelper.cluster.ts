// The RabbitMQ cluster helper itself (test/helpers/rabbitmqCluster.ts), with raw MQTT.js clients:
// the cluster forms, every node answers, and a persistent QoS 1 session (a quorum queue) survives
// a SIGKILL of its node: the subscriber comes back on another node with the same client id, finds
// its session and gets every acknowledged number; the killed node rejoins. Start, restart and
// failover times, memory, duplicates and the queue's members are printed (t.diagnostic), not asserted.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import mqtt, { type IConnackPacket, type MqttClient } from 'mqtt';

import { delay, uniqueTopic, waitFor } from '../helpers/net';
import { type RabbitMqCluster, type RabbitMqClusterNode, rabbitmqClusterSkip, startRabbitMqCluster } from '../helpers/rabbitmqCluster';

const execFileAsync = promisify(execFile);

/** Hang guards only: how long a client may take to connect, and a stream to make progress. */
const CONNECT_TIMEOUT_MS = 10_000;
const PROGRESS_TIMEOUT_MS = 60_000;

/** A connected MQTT 3.1.1 client that does not reconnect by itself, and its CONNACK; rejects on a refusal or timeout. */
function connect(url: string, options: mqtt.IClientOptions, onMessage?: (payload: Buffer) => void): Promise<{ client: MqttClient; connack: IConnackPacket }> {
    return new Promise((resolve, reject) => {
        const client = mqtt.connect(url, { protocolVersion: 4, reconnectPeriod: 0, connectTimeout: CONNECT_TIMEOUT_MS, ...options });
        if (onMessage) {
            // Before the CONNACK: a session found on the broker delivers its queue right after it.
            client.on('message', (_topic, payload) => onMessage(payload));
        }
        client.once('connect', (connack) => resolve({ client, connack }));
        client.on('error', (err) => {
            client.end(true);
            reject(err);
        });
        client.once('close', () => reject(new Error(`${url}: closed before a CONNACK`)));
    });
}

/** connect(), tried again every 500 ms until `timeoutMs` (a node's peers need a moment to notice its loss). */
async function connectRetrying(url: string, options: mqtt.IClientOptions, onMessage: (payload: Buffer) => void, timeoutMs: number) {
    const deadline = Date.now() + timeoutMs;
    for (let attempts = 1; ; attempts++) {
        try {
            return { ...(await connect(url, options, onMessage)), attempts };
        } catch (err) {
            if (Date.now() >= deadline) {
                throw err;
            }
            await delay(500);
        }
    }
}

/** The Erlang node names a node's cluster_status reports as running. */
async function runningNodes(node: RabbitMqClusterNode): Promise<string[]> {
    return (JSON.parse(await node.broker.rabbitmqctl('cluster_status', '--formatter', 'json')) as { running_nodes: string[] }).running_nodes;
}

/** The resident memory of a process in MiB (Linux /proc), NaN when unknown. */
function rssMiB(pid: number | undefined): number {
    try {
        const match = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${String(pid)}/status`, 'utf8'));
        return match ? Number(match[1]) / 1024 : NaN;
    } catch {
        return NaN;
    }
}

/** How long `task` took, in ms. */
async function timed(task: () => Promise<void>): Promise<number> {
    const started = Date.now();
    await task();
    return Date.now() - started;
}

describe('RabbitMQ cluster helper (3 nodes, MQTT sessions in quorum queues)', { skip: rabbitmqClusterSkip(), timeout: 240_000 }, () => {
    let cluster: RabbitMqCluster;
    let startMs = 0;
    before(async () => {
        startMs = await timed(async () => {
            cluster = await startRabbitMqCluster();
        });
    });
    after(async () => {
        await cluster?.stop();
    });

    const allNodeNames = (): string[] => cluster.nodes.map((node) => node.broker.nodeName).sort();

    it('starts three clustered nodes, registered with the private epmd only, each answering an MQTT CONNECT', async (t) => {
        t.diagnostic(`fresh start ${startMs} ms; ${cluster.settings}`);
        assert.equal(cluster.kind, 'rabbitmq');
        assert.equal(cluster.keepsSessions, true);
        assert.equal(cluster.nodes.length, 3);
        for (const node of cluster.nodes) {
            const { client, connack } = await connect(node.url, { clientId: `pip-mqtt-hello-${randomBytes(4).toString('hex')}` });
            client.end(true);
            assert.equal(connack.returnCode, 0, node.name);
            assert.deepEqual((await runningNodes(node)).sort(), allNodeNames(), `${node.name}'s running nodes`);
        }
        const { stdout } = await execFileAsync('epmd', ['-port', String(cluster.epmdPort), '-names'], { encoding: 'utf8' });
        for (const nodeName of allNodeNames()) {
            assert.match(stdout, new RegExp(`name ${nodeName.split('@')[0]} at port`), `${nodeName} in the private epmd`);
        }
        const rss = cluster.nodes.map((node) => rssMiB(node.broker.pid));
        t.diagnostic(`RSS of the VMs: ${rss.map((mib) => mib.toFixed(0)).join(' + ')} = ${rss.reduce((a, b) => a + b, 0).toFixed(0)} MiB`);
    });

    it('keeps a persistent QoS 1 session through a SIGKILL of its node: 0 lost, and the node rejoins', async (t) => {
        const [first, second, third] = cluster.nodes;
        const topic = uniqueTopic('rabbitmq-cluster');
        const clientId = `pip-mqtt-session-${randomBytes(4).toString('hex')}`;
        const acknowledged = new Set<number>();
        const received = new Set<number>();
        let duplicates = 0;
        const onMessage = (payload: Buffer): void => {
            const n = Number(payload.toString());
            if (received.has(n)) {
                duplicates++;
            }
            received.add(n);
        };
        const clients: MqttClient[] = [];
        let publishing = true;
        let publisherDone: Promise<void> | undefined;
        try {
            const sub = await connect(first.url, { clientId, clean: false }, onMessage);
            clients.push(sub.client);
            const granted = await sub.client.subscribeAsync(topic, { qos: 1 });
            assert.deepEqual(granted.map((grant) => grant.qos), [1]);
            const queues = JSON.parse(await second.broker.rabbitmqctl('list_queues', 'name', 'type', 'leader', 'members', '--formatter', 'json')) as
                Array<{ name: string; type: string; leader: string; members: string[] }>;
            const queue = queues.find((q) => q.name.includes(clientId));
            assert.ok(queue, `the session's queue among ${queues.map((q) => q.name).join(', ')}`);
            assert.equal(queue.type, 'quorum');
            assert.deepEqual([...queue.members].sort(), allNodeNames());
            t.diagnostic(`session queue ${queue.name}: ${queue.type}, leader ${queue.leader}, ${queue.members.length} members`);

            const pub = await connect(second.url, { clientId: `pip-mqtt-pub-${randomBytes(4).toString('hex')}` });
            clients.push(pub.client);
            publisherDone = (async () => {
                for (let n = 1; publishing; n++) {
                    await pub.client.publishAsync(topic, String(n), { qos: 1 }); // resolves on PUBACK
                    acknowledged.add(n);
                    await delay(5);
                }
            })();
            const progress = async (count: number, what: string): Promise<void> => {
                const target = received.size + count;
                await waitFor(() => received.size >= target, PROGRESS_TIMEOUT_MS, `${count} more numbers ${what}`);
            };
            await progress(200, 'on node 1');

            const killedAt = Date.now();
            await first.kill('SIGKILL');
            sub.client.end(true);
            const back = await connectRetrying(third.url, { clientId, clean: false }, onMessage, PROGRESS_TIMEOUT_MS);
            clients.push(back.client);
            const failoverMs = Date.now() - killedAt;
            assert.equal(back.connack.sessionPresent, true, 'the session found on node 3');
            await progress(200, 'on node 3, node 1 down (2 of 3 nodes up)');
            const restartMs = await timed(() => first.start());
            assert.deepEqual((await runningNodes(first)).sort(), allNodeNames(), 'node 1 back in the cluster');
            assert.deepEqual((await runningNodes(second)).sort(), allNodeNames(), 'node 1 back, as node 2 sees it');
            await progress(100, 'with node 1 back');

            publishing = false;
            await publisherDone;
            const complete = await waitFor(() => [...acknowledged].every((n) => received.has(n)), PROGRESS_TIMEOUT_MS, 'every acknowledged number')
                .then(() => true, () => false);
            const lost = [...acknowledged].filter((n) => !received.has(n));
            t.diagnostic(`acknowledged ${acknowledged.size}, received ${received.size}, lost ${lost.length}, duplicates ${duplicates}; ` +
                `back on node 3 after ${failoverMs} ms (${back.attempts} CONNECT attempts), node 1 kill+start ${restartMs} ms`);
            assert.ok(complete, `lost ${lost.length}: ${lost.slice(0, 50).join(', ')}`);
            assert.equal(lost.length, 0);
        } finally {
            publishing = false;
            await publisherDone?.catch(() => undefined);
            for (const client of clients) {
                client.end(true);
            }
        }
    });

    it('a node stopped gracefully and started again rejoins the cluster and answers MQTT', async (t) => {
        const node = cluster.nodes[2];
        const stopMs = await timed(() => node.stop());
        assert.equal(node.broker.pid, undefined);
        const startMs = await timed(() => node.start());
        const { client, connack } = await connect(node.url, { clientId: `pip-mqtt-hello-${randomBytes(4).toString('hex')}` });
        client.end(true);
        assert.equal(connack.returnCode, 0);
        assert.deepEqual((await runningNodes(node)).sort(), allNodeNames());
        t.diagnostic(`node 3 stop ${stopMs} ms + start ${startMs} ms`);
    });
});
