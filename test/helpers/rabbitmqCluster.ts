// A RabbitMQ cluster for tests: three private nodes of ./rabbitmq (each with its own node name,
// data folder and AMQP, MQTT and distribution ports on 127.0.0.1), one Erlang cookie, and an epmd
// of the cluster's own on a free port, so nothing registers with the machine's epmd on 4369.
//
// Durable MQTT sessions live in quorum queues (`mqtt.durable_queue_type = quorum`, RabbitMQ 3.10
// and later), replicated on every node: a persistent session survives the loss of the node it was
// on, and keeps working while one node of three is down (a quorum queue needs a majority of its
// members, as does the MQTT plugin's client-id registry, a Raft cluster of all nodes too). With
// the default, classic queues, the session and its messages live on one node and go with it.
//
// The cluster forms by classic_config peer discovery: every node's configuration lists all three.
// A fresh node joins the first listed peer it reaches and starts alone when it reaches none, so
// node 1 starts first (alone) and nodes 2 and 3 then join it. A node started again keeps its data
// folder, and with it its cluster membership: it rejoins without peer discovery. Restart the nodes
// one at a time: a cluster with every node down takes ~2 minutes to come back (the client-id
// registry of the first node up waits for a majority until a timeout).
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';

import { findExecutable, forgetOnExit, freePorts, killOnExit, SingleFlight, SYSTEM_BIN_DIRS } from './brokerProcess';
import { clusterRequired, type ClusterNode, type TestCluster } from './cluster';
import { canConnect, delay } from './net';
import { type RabbitMqBroker, rabbitmqSkip, spawnWatchdog, startRabbitMq } from './rabbitmq';

/** Where epmd is looked for after PATH: the system folders and Erlang's own. */
const EPMD_DIRS = [...SYSTEM_BIN_DIRS, '/usr/lib/erlang/bin'];
/** How long epmd may take to listen (it takes milliseconds). */
const EPMD_READY_MS = 10_000;
/** How many free ports a private epmd is tried on before giving up (another process may take one first). */
const EPMD_ATTEMPTS = 5;
/** How long a started node may take to show every running peer in its cluster_status (the boot itself is waited for before). */
const JOIN_TIMEOUT_MS = 90_000;
/** Between two cluster_status calls (each runs rabbitmqctl, an Erlang VM of its own: ~1 s of CPU). */
const JOIN_POLL_MS = 500;

/** What makes the cluster behave as the suites expect (TestCluster.settings). */
const SETTINGS =
    'mqtt.durable_queue_type = quorum (persistent sessions in quorum queues on all 3 nodes); 3 nodes; ' +
    'classic_config peer discovery (node 1 first, then 2 and 3 join it); one Erlang cookie; a private epmd';

/** A node of the cluster: a ClusterNode whose start() also waits until it is back in the cluster. */
export interface RabbitMqClusterNode extends ClusterNode {
    /** The node itself: its Erlang node name, pid, folders, and rabbitmqctl. */
    readonly broker: RabbitMqBroker;
    /** Starts the node; resolves once it answers MQTT and its cluster_status shows every node that runs. */
    start(): Promise<void>;
}

/** A running three-node RabbitMQ cluster. */
export interface RabbitMqCluster extends TestCluster {
    readonly kind: 'rabbitmq';
    readonly nodes: readonly RabbitMqClusterNode[];
    /** The port of the cluster's private epmd (ERL_EPMD_PORT of its nodes and of their rabbitmqctl). */
    readonly epmdPort: number;
}

/**
 * For `describe(name, { skip: rabbitmqClusterSkip() }, ...)`: the reason of rabbitmqSkip(), or that
 * epmd is missing; `false` when the cluster can run, and always when clusterRequired('rabbitmq')
 * (REQUIRE_CLUSTERS), so that a missing binary fails the suite instead.
 */
export function rabbitmqClusterSkip(): string | false {
    if (clusterRequired('rabbitmq')) {
        return false;
    }
    const single = rabbitmqSkip();
    if (single) {
        return single;
    }
    return epmdExecutable() ? false : 'epmd (Erlang\'s port mapper) not found: the cluster\'s nodes could not find one another';
}

function epmdExecutable(): string | undefined {
    return findExecutable('epmd', EPMD_DIRS);
}

// ---------------------------------------------------------------- the private epmd

/**
 * An epmd of the cluster's own, in the foreground (not `-daemon`, so its pid is ours to kill), in a
 * process group of its own with a watchdog (./rabbitmq's) that kills it when the test process dies.
 */
class PrivateEpmd {
    private readonly _exited: Promise<void>;
    private _running = true;
    private readonly _watchdog?: ChildProcess;

    private constructor(
        public readonly port: number,
        private readonly _child: ChildProcess,
    ) {
        this._exited = new Promise<void>((resolve) => {
            const gone = (): void => {
                this._running = false;
                resolve();
            };
            _child.once('exit', gone);
            _child.once('error', gone);
        });
        killOnExit(this);
        if (_child.pid !== undefined) {
            this._watchdog = spawnWatchdog(process.pid, _child.pid);
        }
        _child.unref();
    }

    /** Starts epmd on a free 127.0.0.1 port; tries other ports when one turns out taken (epmd exits at once then). */
    public static async start(): Promise<PrivateEpmd> {
        const executable = epmdExecutable();
        if (!executable) {
            throw new Error('epmd not found (install Erlang: the Debian package erlang-base)');
        }
        for (let attempt = 1; ; attempt++) {
            const [port] = await freePorts(1);
            const child = spawn(executable, ['-address', '127.0.0.1', '-port', String(port)], { detached: true, stdio: 'ignore' });
            const epmd = new PrivateEpmd(port, child);
            if (await epmd.listening()) {
                return epmd;
            }
            await epmd.stop();
            if (attempt >= EPMD_ATTEMPTS) {
                throw new Error(`epmd did not listen on port ${port} (exit code ${String(child.exitCode)}), ${attempt} ports tried`);
            }
        }
    }

    /** Whether this epmd runs and accepts connections on its port. */
    private async listening(): Promise<boolean> {
        const deadline = Date.now() + EPMD_READY_MS;
        while (this._running && Date.now() < deadline) {
            if (await canConnect(this.port)) {
                return this._running;
            }
            await delay(20);
        }
        return false;
    }

    /** Kills epmd (it keeps no state: SIGKILL) and its watchdog; resolves once it is gone. */
    public async stop(): Promise<void> {
        // Referenced while we wait for its exit: an unreferenced child would let Node exit first.
        this._child.ref();
        try {
            this.killNow();
            await this._exited;
        } finally {
            this._child.unref();
        }
        forgetOnExit(this);
    }

    /** Synchronous, for the process 'exit' hook. */
    public killNow(): void {
        if (this._running) {
            this._child.kill('SIGKILL');
        }
        this._watchdog?.kill('SIGKILL');
    }
}

// ---------------------------------------------------------------- nodes

/** The Erlang node names cluster_status reports as running, on `broker`'s side. */
async function runningNodes(broker: RabbitMqBroker): Promise<string[]> {
    const status = JSON.parse(await broker.rabbitmqctl('cluster_status', '--formatter', 'json')) as { running_nodes?: unknown };
    return Array.isArray(status.running_nodes) ? status.running_nodes.map(String) : [];
}

class Node implements RabbitMqClusterNode {
    private readonly _starting = new SingleFlight();

    public constructor(
        public readonly name: string,
        public readonly broker: RabbitMqBroker,
        private readonly _peers: () => readonly RabbitMqBroker[],
    ) {}

    public get url(): string {
        return this.broker.url;
    }

    public start(): Promise<void> {
        return this._starting.run(async () => {
            await this.broker.start();
            await this.waitInCluster();
        });
    }

    public stop(): Promise<void> {
        return this.broker.stop();
    }

    public kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
        return this.broker.kill(signal);
    }

    /**
     * Waits until this node's cluster_status shows itself and every other node whose VM runs: a node
     * started again answers MQTT as soon as its own boot is done, and reports its peers once their
     * Mnesia tables are synced with it.
     */
    public async waitInCluster(): Promise<void> {
        const deadline = Date.now() + JOIN_TIMEOUT_MS;
        let seen: string[] = [];
        let lastError = '';
        for (;;) {
            const wanted = this._peers().filter((peer) => peer === this.broker || peer.pid !== undefined).map((peer) => peer.nodeName);
            try {
                seen = await runningNodes(this.broker);
                lastError = '';
            } catch (err) {
                lastError = (err as Error).message;
            }
            if (wanted.every((nodeName) => seen.includes(nodeName))) {
                return;
            }
            if (Date.now() >= deadline) {
                throw new Error(
                    `${this.name} (${this.broker.nodeName}) did not report ${wanted.join(', ')} as running within ` +
                        `${JOIN_TIMEOUT_MS} ms: it reports ${seen.join(', ') || 'none'}${lastError ? ` (rabbitmqctl: ${lastError})` : ''}`,
                );
            }
            await delay(JOIN_POLL_MS);
        }
    }
}

/**
 * Starts a private epmd and three RabbitMQ nodes clustered by classic_config, with durable MQTT
 * sessions in quorum queues; resolves once every node answers an MQTT CONNECT and reports all
 * three as running (~20 s on 2 CPUs). On failure whatever was started is stopped and removed.
 */
export async function startRabbitMqCluster(): Promise<RabbitMqCluster> {
    const epmd = await PrivateEpmd.start();
    const id = randomBytes(4).toString('hex');
    // Numbered names sort in start order: a fresh node tries its peers in that order, node 1 first.
    const nodeNames = [1, 2, 3].map((i) => `pip-mqtt-${id}-${i}@localhost`);
    const cookie = randomBytes(20).toString('hex').toUpperCase();
    const config = [
        'cluster_formation.peer_discovery_backend = classic_config',
        ...nodeNames.map((nodeName, i) => `cluster_formation.classic_config.nodes.${i + 1} = ${nodeName}`),
        'mqtt.durable_queue_type = quorum',
    ];
    const start = (nodeName: string): Promise<RabbitMqBroker> => startRabbitMq({ cluster: { nodeName, cookie, epmdPort: epmd.port }, config });
    const brokers: RabbitMqBroker[] = [];
    const stop = async (): Promise<void> => {
        try {
            await Promise.all(brokers.map((broker) => broker.cleanup()));
        } finally {
            await epmd.stop();
        }
    };
    try {
        brokers.push(await start(nodeNames[0]));
        const joined = await Promise.allSettled(nodeNames.slice(1).map(start));
        for (const result of joined) {
            if (result.status === 'fulfilled') {
                brokers.push(result.value);
            }
        }
        const failed = joined.find((result): result is PromiseRejectedResult => result.status === 'rejected');
        if (failed) {
            throw failed.reason;
        }
        const nodes = brokers.map((broker, i) => new Node(`rabbitmq-${i + 1}`, broker, () => brokers));
        await Promise.all(nodes.map((node) => node.waitInCluster()));
        return { kind: 'rabbitmq', nodes, keepsSessions: true, settings: SETTINGS, epmdPort: epmd.port, stop };
    } catch (err) {
        await stop();
        throw err;
    }
}
