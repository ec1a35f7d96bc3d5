// The ejabberd cluster helper (test/helpers/ejabberdCluster.ts) checked with raw MQTT.js clients:
// the cluster starts and every node answers, `$share/...` is refused, a persistent session does
// not survive the SIGKILL of its node (keepsSessions false) while a client that resubscribes on
// another node gets everything published after the resubscribe, nodes rejoin after a kill and
// after a graceful stop, and stop() leaves no process and no folder behind.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { after, before, describe, it, type TestContext } from 'node:test';
import mqtt, { type IClientOptions, type IConnackPacket, type MqttClient, type Packet } from 'mqtt';

import { delay, waitFor } from '../helpers/net';
import { type EjabberdCluster, ejabberdClusterSkip, type EjabberdNode, startEjabberdCluster } from '../helpers/ejabberdCluster';

type Version = 4 | 5;

/** A DISCONNECT's reason code in hex and its reason string. */
function disconnectReason(packet: Packet): string {
    return packet.cmd === 'disconnect' ? `0x${(packet.reasonCode ?? 0).toString(16)} ${packet.properties?.reasonString ?? ''}` : '';
}

/** `MQTT 5` or `MQTT 3.1.1`. */
function label(version: Version): string {
    return version === 5 ? 'MQTT 5' : 'MQTT 3.1.1';
}

/** Connects with `options` (no automatic reconnect unless they say so); `onMessage` is attached before the CONNACK can arrive. */
function connect(
    url: string,
    options: IClientOptions,
    onMessage?: (payload: Buffer) => void,
): Promise<{ client: MqttClient; connack: IConnackPacket }> {
    return new Promise((resolve, reject) => {
        const client = mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: 10_000, keepalive: 10, ...options });
        if (onMessage) client.on('message', (_topic, payload) => onMessage(payload));
        const fail = (err: Error): void => {
            client.end(true);
            reject(err);
        };
        const closed = (): void => fail(new Error(`connection to ${url} closed before a CONNACK`));
        client.once('connect', (connack) => {
            client.removeListener('error', fail);
            client.removeListener('close', closed);
            client.on('error', () => undefined);
            resolve({ client, connack });
        });
        client.once('error', fail);
        client.once('close', closed);
    });
}

/** The CONNACK of a clean CONNECT with `version` (reason code 0 expected), the connection closed again. */
async function connackOf(node: EjabberdNode, version: Version): Promise<IConnackPacket> {
    const { client, connack } = await connect(node.url, { protocolVersion: version, clientId: `pip-mqtt-probe-${randomBytes(4).toString('hex')}` });
    await client.endAsync();
    return connack;
}

/** Resident memory of a process in MiB, from /proc. */
function rssMiB(pid: number | undefined): number {
    if (pid === undefined) return 0;
    const match = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match ? Number(match[1]) / 1024 : 0;
}

/** `pid` and every process below it, from /proc. */
function processTree(pid: number): number[] {
    const parents = new Map<number, number>();
    for (const entry of fs.readdirSync('/proc').filter((name) => /^\d+$/.test(name))) {
        try {
            const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
            parents.set(Number(entry), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
        } catch {
            // gone meanwhile
        }
    }
    const tree = [pid];
    for (let i = 0; i < tree.length; i++) {
        for (const [child, parent] of parents) {
            if (parent === tree[i]) tree.push(child);
        }
    }
    return tree;
}

function alive(pid: number): boolean {
    try {
        const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
        return !['Z', 'X'].includes(stat.charAt(stat.lastIndexOf(')') + 2));
    } catch {
        return false;
    }
}

/**
 * Numbered QoS 1 publishes (1, 2, 3, ...), one at a time, each counted once its PUBACK arrived; a
 * publish that fails is tried again (the client reconnects by itself). The client's losses of its
 * connection are counted, with the reason codes of the DISCONNECTs the broker sent.
 */
class Publisher {
    /** The number the next publish will carry. */
    public next = 1;
    public readonly acked: number[] = [];
    public failures = 0;
    public closes = 0;
    public readonly disconnects: string[] = [];
    private _running = true;
    private readonly _loop: Promise<void>;

    public constructor(private readonly _client: MqttClient, topic: string) {
        _client.on('close', () => this.closes++);
        _client.on('packetreceive', (packet: Packet) => {
            if (packet.cmd === 'disconnect') this.disconnects.push(disconnectReason(packet));
        });
        this._loop = (async () => {
            while (this._running) {
                const n = this.next++;
                for (;;) {
                    try {
                        await this._client.publishAsync(topic, String(n), { qos: 1 });
                        break;
                    } catch {
                        this.failures++;
                        if (!this._running) return;
                        await delay(100);
                    }
                }
                this.acked.push(n);
                await delay(10);
            }
        })();
    }

    public async stop(): Promise<void> {
        this._running = false;
        await this._loop;
    }
}

describe('ejabberd cluster helper (3 nodes, mod_mqtt)', { skip: ejabberdClusterSkip(), timeout: 180_000 }, () => {
    let cluster: EjabberdCluster;
    let startMs = 0;
    const clients: MqttClient[] = [];

    before(async () => {
        const started = Date.now();
        cluster = await startEjabberdCluster();
        startMs = Date.now() - started;
    });
    after(async () => {
        clients.forEach((client) => client.end(true));
        await cluster?.stop();
    });

    /** Every node sees all three nodes running. */
    async function assertClustered(): Promise<void> {
        const names = cluster.nodes.map((node) => node.nodeName).sort();
        for (const node of cluster.nodes) {
            assert.deepEqual(await node.runningNodes(), names, `${node.name}'s running Mnesia nodes`);
        }
    }

    it('starts three nodes that see one another and answer MQTT 5 and 3.1.1 with CONNACK 0', async (t) => {
        assert.equal(cluster.kind, 'ejabberd');
        assert.equal(cluster.keepsSessions, false);
        await assertClustered();
        for (const node of cluster.nodes) {
            assert.equal((await connackOf(node, 4)).returnCode, 0, `${node.name} MQTT 3.1.1`);
            assert.equal((await connackOf(node, 5)).reasonCode, 0, `${node.name} MQTT 5`);
        }
        const memory = cluster.nodes.map((node) => `${node.name} ${rssMiB(node.pid).toFixed(0)} MiB`).join(', ');
        t.diagnostic(`fresh start of the cluster (epmd, 3 nodes, 2 joins) ${startMs} ms; resident memory ${memory}`);
        t.diagnostic(`settings: ${cluster.settings}`);
    });

    for (const version of [5, 4] as const) {
        it(`${label(version)}: refuses a $share subscription without a SUBACK`, async (t) => {
            const clientId = `pip-mqtt-share-${randomBytes(4).toString('hex')}`;
            const { client, connack } = await connect(cluster.nodes[1].url, { protocolVersion: version, clientId });
            clients.push(client);
            const answer = await new Promise<string>((resolve) => {
                client.on('packetreceive', (packet: Packet) => {
                    if (packet.cmd === 'suback') resolve(`SUBACK ${JSON.stringify(packet.granted)}`);
                    if (packet.cmd === 'disconnect') resolve(`DISCONNECT ${disconnectReason(packet)}`);
                });
                client.once('close', () => resolve('connection closed'));
                client.subscribe('$share/pip/ejabberd/share', { qos: 1 }, () => undefined);
            });
            client.end(true);
            t.diagnostic(`${label(version)}: $share/pip/ejabberd/share answered with: ${answer}` +
                (version === 5 ? `; CONNACK sharedSubscriptionAvailable ${String(connack.properties?.sharedSubscriptionAvailable)}` : ''));
            if (version === 5) {
                assert.equal(connack.properties?.sharedSubscriptionAvailable, false);
                assert.match(answer, /^DISCONNECT 0x9e /);
            } else {
                assert.equal(answer, 'connection closed');
            }
        });
    }

    /**
     * A persistent QoS 1 subscriber on node 1, a publisher on node 2; node 1 is killed, the
     * subscriber connects to node 3 with the same client id and subscribes again.
     */
    async function sessionAcrossKill(t: TestContext, version: Version): Promise<void> {
        const [node1, node2, node3] = cluster.nodes;
        const tag = randomBytes(4).toString('hex');
        const topic = `pip-mqtt/ejabberd/${tag}`;
        const received = new Set<number>();
        let duplicates = 0;
        const onMessage = (payload: Buffer): void => {
            const n = Number(payload.toString());
            if (received.has(n)) duplicates++;
            received.add(n);
        };
        const subscriber: IClientOptions = {
            protocolVersion: version,
            clientId: `pip-mqtt-sub-${version}-${tag}`,
            clean: false,
            ...(version === 5 ? { properties: { sessionExpiryInterval: 300 } } : {}),
        };
        const first = await connect(node1.url, subscriber, onMessage);
        clients.push(first.client);
        const granted = await first.client.subscribeAsync(topic, { qos: 1 });
        assert.equal(granted[0].qos, 1);
        // The publisher reconnects by itself: see the diagnostic about its disconnects.
        const pub = await connect(node2.url, { protocolVersion: version, clientId: `pip-mqtt-pub-${version}-${tag}`, reconnectPeriod: 200 });
        clients.push(pub.client);
        const publisher = new Publisher(pub.client, topic);
        t.after(() => publisher.stop());
        await waitFor(() => received.size >= 30, 30_000, '30 messages on node 1');

        const killedAt = Date.now();
        await node1.kill('SIGKILL');
        const lastBeforeKill = Math.max(...received);
        const nextAtKill = publisher.next;
        first.client.end(true);
        // The subscriber stays away while 20 more messages are published, as a client waiting to reconnect would.
        const lastAcked = (): number => publisher.acked[publisher.acked.length - 1] ?? 0;
        await waitFor(() => lastAcked() >= nextAtKill + 20, 30_000, '20 publishes while the subscriber is away');
        const second = await connect(node3.url, subscriber, onMessage);
        clients.push(second.client);
        const sessionPresent = second.connack.sessionPresent;
        const beforeResubscribe = received.size;
        await second.client.subscribeAsync(topic, { qos: 1 });
        const firstAfter = publisher.next;
        const outageMs = Date.now() - killedAt;
        const beforeSuback = received.size - beforeResubscribe;
        await waitFor(() => lastAcked() >= firstAfter + 50, 30_000, '50 publishes after the resubscribe');
        await publisher.stop();
        const missingAfter = (): number[] => publisher.acked.filter((n) => n >= firstAfter && !received.has(n));
        await waitFor(() => missingAfter().length === 0, 30_000, 'every message published after the resubscribe').catch(() => undefined);
        const lost = publisher.acked.filter((n) => n < firstAfter && !received.has(n));

        const restartStarted = Date.now();
        await node1.start();
        const restartMs = Date.now() - restartStarted;
        await assertClustered();
        t.diagnostic(`${label(version)}: CONNACK sessionPresent on node 3 after node 1's SIGKILL: ${String(sessionPresent)}; ` +
            `received before the kill up to #${lastBeforeKill}, ${beforeSuback} messages between the reconnect and the SUBACK; ` +
            `kill to SUBACK on node 3 ${outageMs} ms; published (acknowledged) ${publisher.acked.length}, ` +
            `killed before #${nextAtKill}, resubscribed before #${firstAfter}, lost in the outage ${lost.length}` +
            `${lost.length ? ` (#${lost[0]}-#${lost[lost.length - 1]})` : ''}, duplicates ${duplicates}; ` +
            `the publisher on node 2 lost its connection ${publisher.closes} times (DISCONNECTs: ${publisher.disconnects.join(', ') || 'none'}), ` +
            `failed publishes tried again ${publisher.failures}`);
        t.diagnostic(`${label(version)}: node 1 restarted (same Mnesia folder) and back in the cluster in ${restartMs} ms`);
        assert.deepEqual(missingAfter(), [], 'messages published after the resubscribe that did not arrive');
        assert.equal(sessionPresent, false, 'ejabberd kept the session of a killed node: keepsSessions should be true');
        await Promise.all([second.client.endAsync(), pub.client.endAsync()]);
    }

    for (const version of [5, 4] as const) {
        it(`${label(version)}: a persistent session is lost with its node (SIGKILL); resubscribed on another node, every new message arrives`,
            async (t) => { await sessionAcrossKill(t, version); });
    }

    it('a node stopped gracefully starts again and rejoins the cluster', async (t) => {
        const node = cluster.nodes[2];
        const stopStarted = Date.now();
        await node.stop();
        const stopMs = Date.now() - stopStarted;
        assert.equal(node.pid, undefined);
        const names = cluster.nodes.filter((other) => other !== node).map((other) => other.nodeName).sort();
        assert.deepEqual(await cluster.nodes[0].runningNodes(), names);
        const started = Date.now();
        await node.start();
        t.diagnostic(`graceful stop ${stopMs} ms, start again (rejoined) ${Date.now() - started} ms`);
        await assertClustered();
        assert.equal((await connackOf(node, 5)).reasonCode, 0);
    });

    it('stop() ends every process (VMs, their helpers, epmd) and removes the folder', async () => {
        const roots = [...cluster.nodes.map((node) => node.pid), cluster.epmdPid].filter((pid): pid is number => pid !== undefined);
        assert.equal(roots.length, 4);
        const pids = roots.flatMap(processTree);
        await cluster.stop();
        assert.deepEqual(pids.filter(alive), [], 'processes left running');
        assert.equal(fs.existsSync(cluster.dir), false, `${cluster.dir} left behind`);
    });
});
