// An Aedes cluster for tests: a private redis-server on a free 127.0.0.1 port and three Aedes
// nodes (each a Node.js child process running aedesNode.js, on a free MQTT port of its own) that
// keep every session in that Redis (aedes-persistence-redis) and route every message through its
// pub/sub (mqemitter-redis). A persistent session lives in Redis, not in a node, so it survives
// the loss of the node it was on. Each node can be stopped, killed (SIGKILL) and started again on
// its port; Redis runs until the cluster stops. The machine's own Redis (6379) is never touched.
import { type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { connect as tcpConnect } from 'node:net';
import * as path from 'node:path';
import mqtt from 'mqtt';

import {
    BrokerProcess,
    configuredExecutable,
    freePorts,
    startInTempFolder,
    tail,
    type Readiness,
} from './brokerProcess';
import { type ClusterNode, clusterRequired, type TestCluster } from './cluster';
import { HOST } from './net';

/** redis-server starts in ~10 ms, an Aedes node (Node.js, Aedes, two Redis connections) in ~0.3 s. */
const READY_TIMEOUT_MS = 15_000;
/** SIGTERM: Redis writes its append-only file and exits, a node closes its clients (aedesNode.ts gives up after 5 s). */
const STOP_GRACE_MS = 10_000;
/** How long one readiness probe (PING, or CONNECT) may wait for its answer. */
const PROBE_TIMEOUT_MS = 2_000;
/** The npm packages the nodes need beyond aedes (dev dependencies of this package). */
const NODE_PACKAGES = ['aedes-persistence-redis', 'mqemitter-redis', 'ioredis'];

/** The redis-server binary: REDIS_SERVER_BIN when set (only that path), else PATH and the usual folders. */
function redisBinary(): string | undefined {
    return configuredExecutable('REDIS_SERVER_BIN', 'redis-server');
}

/** The packages of NODE_PACKAGES that cannot be loaded. */
function missingPackages(): string[] {
    return NODE_PACKAGES.filter((name) => {
        try {
            require.resolve(name);
            return false;
        } catch {
            return true;
        }
    });
}

/**
 * For `describe(name, { skip: aedesClusterSkip() }, ...)`: a reason when redis-server or one of
 * the npm packages is missing, `false` when all are there, and always when REQUIRE_CLUSTERS names
 * `aedes-redis` (or `all`): then the suite runs and fails loudly.
 */
export function aedesClusterSkip(): string | false {
    if (clusterRequired('aedes-redis')) return false;
    if (!redisBinary()) return 'redis-server binary not found (install the Debian package redis-server, or set REDIS_SERVER_BIN)';
    const missing = missingPackages();
    if (missing.length > 0) return `npm packages missing: ${missing.join(', ')} (npm ci installs them: dev dependencies)`;
    return false;
}

/** A node of the Aedes cluster: a ClusterNode with its process and log, for diagnostics. */
export interface AedesNode extends ClusterNode {
    readonly port: number;
    /** The process id while it runs. */
    readonly pid: number | undefined;
    /** The node's log, appended across restarts (see aedesNode.ts). */
    readonly logFile: string;
}

/** The cluster's Redis, for diagnostics (its memory, its keys). */
export interface AedesClusterRedis {
    readonly port: number;
    readonly pid: number | undefined;
    readonly logFile: string;
}

/** A running Aedes cluster: a TestCluster whose nodes and Redis tell their process and log. */
export interface AedesCluster extends TestCluster {
    readonly kind: 'aedes-redis';
    readonly nodes: readonly AedesNode[];
    readonly redis: AedesClusterRedis;
    /**
     * How many messages Redis queues for the session of `clientId` (sent and not yet acknowledged,
     * or not yet sent): after a stream that all arrived, what is left goes out again at its next
     * connect (duplicates). NaN when Redis does not answer.
     */
    queuedFor(clientId: string): Promise<number>;
}

/** True when a line of `log` starts with `prefix` (a process's: `[<pid>] `, `<pid>:`) and holds `text`. */
function logged(log: string, prefix: string, text: string): boolean {
    return log.split('\n').some((line) => line.startsWith(prefix) && line.includes(text));
}

/**
 * Sends one command to the Redis on `port` and resolves with the first line of its answer
 * (`+PONG`, `:12`), or null when there is none within PROBE_TIMEOUT_MS.
 */
function redisCommand(port: number, args: readonly string[]): Promise<string | null> {
    return new Promise((resolve) => {
        const socket = tcpConnect({ host: HOST, port });
        let answer = '';
        const done = (line: string | null): void => {
            socket.destroy();
            resolve(line);
        };
        socket.setTimeout(PROBE_TIMEOUT_MS, () => done(null));
        socket.once('error', () => done(null));
        socket.once('connect', () => {
            socket.write(`*${args.length}\r\n${args.map((arg) => `$${Buffer.byteLength(arg)}\r\n${arg}\r\n`).join('')}`);
        });
        socket.on('data', (data: Buffer) => {
            answer += data.toString('utf8');
            const end = answer.indexOf('\r\n');
            if (end >= 0) done(answer.slice(0, end));
        });
    });
}

/** Why an MQTT CONNECT did not succeed, or that it did. */
type Handshake = { ok: true } | { ok: false; why: string };

/**
 * One MQTT 3.1.1 CONNECT (clean session, a random client id, so no session is left behind) and
 * its answer. A node answers only once its persistence has loaded the subscriptions from Redis
 * and its emitter has subscribed to Redis pub/sub: a CONNACK 0 means it serves as part of the cluster.
 */
function mqttAnswers(port: number): Promise<Handshake> {
    return new Promise((resolve) => {
        const client = mqtt.connect({
            host: HOST,
            port,
            protocolVersion: 4,
            clientId: `pip-mqtt-aedes-ready-${randomBytes(6).toString('hex')}`,
            clean: true,
            reconnectPeriod: 0,
            connectTimeout: PROBE_TIMEOUT_MS,
        });
        let settled = false;
        const done = (result: Handshake): void => {
            if (settled) return;
            settled = true;
            clearTimeout(timer);
            // Settled first: whatever end() does, the readiness loop goes on.
            resolve(result);
            client.end(!result.ok);
        };
        const timer = setTimeout(() => done({ ok: false, why: 'no CONNACK' }), PROBE_TIMEOUT_MS + 500);
        client.once('connect', () => done({ ok: true }));
        client.once('error', (err) => done({ ok: false, why: err.message }));
        client.once('close', () => done({ ok: false, why: 'connection closed before a CONNACK' }));
    });
}

/**
 * The cluster's private redis-server. Sessions, subscriptions, queued messages and retained
 * messages live here, so it keeps them as a production setup would: in an append-only file
 * (fsync every second), without RDB snapshots; AOF rewrites are off, so Redis never forks a child
 * that a kill could leave behind. It runs from the cluster's start to its stop.
 */
class RedisProcess extends BrokerProcess {
    public constructor(dir: string, binary: string) {
        const configFile = path.join(dir, 'redis.conf');
        super(dir, {
            name: 'redis-server',
            executable: binary,
            args: [configFile],
            configFile,
            logFile: path.join(dir, 'redis.log'),
            readyTimeoutMs: READY_TIMEOUT_MS,
            stopGraceMs: STOP_GRACE_MS,
        });
    }

    protected async pickPorts(): Promise<void> {
        [this._port] = await freePorts(1);
    }

    protected portTaken(): boolean {
        // "Warning: Could not create server TCP listening socket 127.0.0.1:N: bind: Address already in use"
        return `${this.logSinceStart()}\n${tail(this.outputFile)}`.includes('Address already in use');
    }

    protected where(): string {
        return `Redis port ${this._port}`;
    }

    protected readiness(child: ChildProcess): Readiness {
        return {
            // Our process logged that it is ready (a stranger on the port would not), and it answers.
            ready: async () =>
                child.pid !== undefined && logged(this.logSinceStart(), `${child.pid}:`, 'Ready to accept connections') &&
                (await redisCommand(this._port, ['PING'])) === '+PONG',
            timeoutMessage: (timeoutMs) => `redis-server did not answer PING within ${timeoutMs} ms`,
        };
    }

    protected config(): string {
        // Strings in double quotes: Redis reads them as one argument whatever they hold.
        return [
            `bind ${HOST}`,
            `port ${this._port}`,
            'protected-mode yes',
            'daemonize no',
            `dir ${JSON.stringify(this.dir)}`,
            `logfile ${JSON.stringify(this.logFile)}`,
            'loglevel notice',
            'databases 1',
            'save ""',
            'appendonly yes',
            'appendfsync everysec',
            'auto-aof-rewrite-percentage 0',
            '',
        ].join('\n');
    }
}

/** One Aedes node: `node aedesNode.js <config.json>` with its MQTT port and the cluster's Redis. */
class AedesNodeProcess extends BrokerProcess implements AedesNode {
    public constructor(
        dir: string,
        public readonly name: string,
        private readonly _redisPort: number,
    ) {
        const configFile = path.join(dir, 'aedes-node.json');
        super(dir, {
            name,
            executable: process.execPath,
            args: [path.join(__dirname, 'aedesNode.js'), configFile],
            configFile,
            logFile: path.join(dir, 'aedes-node.log'),
            readyTimeoutMs: READY_TIMEOUT_MS,
            stopGraceMs: STOP_GRACE_MS,
        });
    }

    protected async pickPorts(): Promise<void> {
        [this._port] = await freePorts(1);
    }

    protected portTaken(): boolean {
        return this.logSinceStart().includes('EADDRINUSE');
    }

    protected where(): string {
        return `MQTT port ${this._port}, Redis port ${this._redisPort}`;
    }

    protected readiness(child: ChildProcess): Readiness {
        let lastHandshake = 'not tried';
        return {
            ready: async () => {
                if (child.pid === undefined || !logged(this.logSinceStart(), `[${child.pid}] `, `listening on ${HOST}:${this._port}`)) {
                    return false;
                }
                const handshake = await mqttAnswers(this._port);
                if (!handshake.ok) lastHandshake = handshake.why;
                return handshake.ok;
            },
            timeoutMessage: (timeoutMs) => `${this.name} did not answer an MQTT CONNECT within ${timeoutMs} ms (last try: ${lastHandshake})`,
        };
    }

    protected config(): string {
        return JSON.stringify({ name: this.name, host: HOST, port: this._port, redisPort: this._redisPort, logFile: this.logFile }, null, 4) + '\n';
    }
}

/**
 * Starts a private redis-server, then `size` Aedes nodes on it (each on a free MQTT port, each in
 * a temp folder of its own), and resolves once every node answers an MQTT CONNECT. When a
 * process does not come up, whatever started is stopped and its folder removed, and the error
 * (with the config and the log tail) is thrown. Every process is killed when the test process
 * exits, and the folders are removed.
 */
export async function startAedesCluster(size = 3): Promise<AedesCluster> {
    const binary = redisBinary();
    if (!binary) throw new Error('redis-server binary not found; install the Debian package redis-server (or set REDIS_SERVER_BIN)');
    const missing = missingPackages();
    if (missing.length > 0) throw new Error(`npm packages missing: ${missing.join(', ')}; run npm ci`);
    const redis = await startInTempFolder('pip-mqtt-redis-', (dir) => new RedisProcess(dir, binary));
    const started = await Promise.allSettled(Array.from({ length: size }, (_, i) =>
        startInTempFolder('pip-mqtt-aedes-', (dir) => new AedesNodeProcess(dir, `aedes-${i + 1}`, redis.port))));
    const nodes = started.flatMap((result) => (result.status === 'fulfilled' ? [result.value] : []));
    const stop = async (): Promise<void> => {
        // The nodes first: Redis going away under a running node only fills its log with errors.
        await Promise.all(nodes.map((node) => node.cleanup()));
        await redis.cleanup();
    };
    const failed = started.find((result): result is PromiseRejectedResult => result.status === 'rejected');
    if (failed) {
        await stop();
        throw failed.reason;
    }
    return {
        kind: 'aedes-redis',
        nodes,
        redis,
        // aedes-persistence-redis keeps the queue of a session as the list `outgoing:<client id, URI-encoded>`.
        queuedFor: async (clientId) => Number((await redisCommand(redis.port, ['LLEN', `outgoing:${encodeURIComponent(clientId)}`]))?.slice(1)),
        keepsSessions: true,
        losesAtPublisherLoss: 'Aedes sends the PUBACK of a QoS 1 PUBLISH before it stores or forwards it (lib/handlers/publish.js)',
        settings: 'aedes 1.2 x3 (Node child processes, random broker ids) on one private redis-server (appendonly yes, appendfsync everysec, ' +
            'no RDB snapshots, no AOF rewrites); aedes-persistence-redis 11 (maxSessionDelivery 1000000) and mqemitter-redis 7; ' +
            'deliveries to a resuming session held back until its CONNACK (authorizeForward)',
        stop,
    };
}
