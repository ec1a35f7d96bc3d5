// NATS for tests: a private nats-server with its MQTT gateway, spawned on free 127.0.0.1 ports
// with a generated configuration, log and JetStream store in a temp folder.
//
// NATS serves MQTT 3.1.1 only on top of JetStream (sessions, retained messages and QoS 1 queues
// are JetStream streams), so the config names the server (`server_name`) and gives JetStream a
// store folder; both stay the same across stop/start, so persistent sessions and retained
// messages survive restart(). A system NATS on the same machine (port 4222) is left alone: every
// port here is picked free at the first start, the monitoring (http) port, cluster, gateway and
// leaf node listeners are not configured (so not opened), and /etc/nats is not read.
import { type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as path from 'node:path';
import mqtt, { type IClientOptions } from 'mqtt';

import {
    BrokerProcess,
    brokerRequired,
    configuredExecutable,
    freePorts,
    startInTempFolder,
    tail,
    type Readiness,
    type SpawnedTestBroker,
} from './brokerProcess';
import { canConnect, HOST } from './net';

/** A fresh start takes ~0.1 s here; the first MQTT CONNECT then sets up the MQTT streams (~50 ms). */
const READY_TIMEOUT_MS = 15_000;
/**
 * A graceful stop (SIGTERM: NATS shuts JetStream down cleanly, flushing the store, and exits) takes
 * well under a second to ~2 s; after this the process is killed.
 */
const STOP_GRACE_MS = 10_000;
/** How long one readiness CONNECT may wait for its CONNACK. */
const CONNACK_TIMEOUT_MS = 2_000;

/** How to configure a spawned NATS server. */
export interface NatsOptions {
    /**
     * username -> password; when given, anonymous clients are refused (CONNACK 5) and these users
     * may connect, over MQTT and NATS alike, with full permissions. A password that looks like a
     * bcrypt hash (`$2a$...`) is refused here: NATS would compare against it as a hash.
     */
    passwords?: Record<string, string>;
    /**
     * A node of a cluster (see natsCluster.ts): its route listener's port, the route ports of all
     * nodes (its own included: NATS ignores a route to itself), and the cluster's name. The MQTT
     * streams and consumers then have `replicas` copies (default 3).
     */
    cluster?: { readonly name: string; readonly port: number; readonly routes: readonly number[]; readonly replicas?: number };
}

/**
 * A spawned nats-server that can be stopped, killed and started again on the same ports. `url`
 * is its MQTT listener (`mqtt://127.0.0.1:<port>`, MQTT 3.1.1 only); `clientPort` its NATS one.
 */
export interface NatsBroker extends SpawnedTestBroker {
    kind: 'nats';
    /** The NATS client protocol port (kept across restarts). */
    readonly clientPort: number;
    /** The temp folder with the config, the log and the JetStream store. */
    readonly dir: string;
    /** The server's log (appended across restarts; every line starts with `[<pid>]`). */
    readonly logFile: string;
    /** Starts again on the same ports with the same config and JetStream store; resolves once MQTT CONNECTs are answered. */
    start(): Promise<void>;
}

/** The nats-server binary: NATS_BIN when set (only that path), else PATH and the usual folders. */
function natsBinary(): string | undefined {
    return configuredExecutable('NATS_BIN', 'nats-server');
}

/** True when the `nats-server` binary is found (NATS_BIN, PATH, /usr/sbin and the like). */
export function natsAvailable(): boolean {
    return natsBinary() !== undefined;
}

/**
 * For `describe(name, { skip: natsSkip() }, ...)`: a reason when nats-server is missing, `false`
 * when it is installed, and always when REQUIRE_BROKERS is `all` or names `nats` (then the suite
 * runs and fails loudly).
 */
export function natsSkip(): string | false {
    if (brokerRequired('nats') || natsAvailable()) {
        return false;
    }
    return 'nats-server binary not found (install the Debian package nats-server, or set NATS_BIN)';
}

/** A string in the NATS config syntax: double-quoted, so `$`, `#` and spaces are literal. */
function quoted(value: string): string {
    // NATS reads \" \\ \n \t \r and \uXXXX in double-quoted strings, as JSON writes them.
    return JSON.stringify(value);
}

/** Why an MQTT CONNECT did not succeed: the CONNACK code, or what happened instead. */
type Handshake = { ok: true } | { ok: false; why: string };

/**
 * One short MQTT 3.1.1 CONNECT (clean session, a random client id) and its answer. A CONNACK 0
 * proves the MQTT layer works, JetStream included: NATS loads the session record from its
 * JetStream stream before it answers.
 */
function mqttHandshake(port: number, credentials: { username: string; password: string } | undefined): Promise<Handshake> {
    return new Promise((resolve) => {
        const options: IClientOptions = {
            host: HOST,
            port,
            protocolVersion: 4,
            clientId: `pip-mqtt-nats-ready-${randomBytes(6).toString('hex')}`,
            clean: true,
            keepalive: 10,
            reconnectPeriod: 0,
            connectTimeout: CONNACK_TIMEOUT_MS,
            ...credentials,
        };
        const client = mqtt.connect(options);
        let settled = false;
        const done = (result: Handshake): void => {
            if (settled) {
                return;
            }
            settled = true;
            clearTimeout(timer);
            // A DISCONNECT, so NATS drops the clean session at once; no need to wait for it.
            client.end(!result.ok);
            resolve(result);
        };
        const timer = setTimeout(() => done({ ok: false, why: 'no CONNACK' }), CONNACK_TIMEOUT_MS + 500);
        client.once('connect', () => done({ ok: true }));
        client.once('error', (err) => done({ ok: false, why: err.message }));
        client.once('close', () => done({ ok: false, why: 'connection closed before a CONNACK' }));
    });
}

class NatsProcess extends BrokerProcess implements NatsBroker {
    public readonly kind = 'nats';
    private readonly _storeDir: string;
    private readonly _serverName: string;
    /** Who the readiness CONNECT logs in as: the first user, or a hidden one when `passwords` is empty. */
    private readonly _probeUser?: { username: string; password: string };
    private readonly _hiddenProbeUser: boolean;
    private _clientPort = 0;

    public constructor(
        dir: string,
        binary: string,
        private readonly _options: NatsOptions,
    ) {
        const configFile = path.join(dir, 'nats-server.conf');
        // Only stdout/stderr of a failure before the log file is open (a config error) land in stderr.log.
        super(dir, {
            name: 'nats-server',
            executable: binary,
            args: ['-c', configFile],
            configFile,
            logFile: path.join(dir, 'nats-server.log'),
            readyTimeoutMs: READY_TIMEOUT_MS,
            stopGraceMs: STOP_GRACE_MS,
        });
        this._storeDir = path.join(dir, 'jetstream');
        this._serverName = `pip-mqtt-nats-${randomBytes(4).toString('hex')}`;
        const passwords = _options.passwords;
        this._hiddenProbeUser = passwords !== undefined && Object.keys(passwords).length === 0;
        if (passwords) {
            for (const [username, password] of Object.entries(passwords)) {
                if (/^\$2[abxy]?\$/.test(password)) {
                    throw new Error(`the password of ${username} starts like a bcrypt hash ($2a$...): NATS would compare against it as one`);
                }
            }
            const first = Object.entries(passwords)[0];
            this._probeUser = first
                ? { username: first[0], password: first[1] }
                : { username: `pip-mqtt-probe-${randomBytes(4).toString('hex')}`, password: randomBytes(12).toString('hex') };
        }
    }

    public get clientPort(): number {
        return this._clientPort;
    }

    /** A free port for MQTT and another for the NATS client protocol. */
    protected async pickPorts(): Promise<void> {
        [this._port, this._clientPort] = await freePorts(2);
    }

    protected portTaken(): boolean {
        // "[FTL] Unable to listen for MQTT connections: listen tcp 127.0.0.1:N: bind: address
        // already in use", or "[FTL] Error listening on port: 127.0.0.1:N, ..." for the client port.
        return `${this.logSinceStart()}\n${tail(this.outputFile)}`.includes('address already in use');
    }

    protected where(): string {
        return `MQTT port ${this._port}, client port ${this._clientPort}`;
    }

    protected readiness(child: ChildProcess): Readiness {
        let lastHandshake = 'not tried';
        return {
            ready: async () => {
                // The log lines of *this* process prove it bound our ports (an old process or a
                // stranger on the port would not write them); the TCP connects prove it accepts, and
                // a CONNACK 0 that the MQTT layer on top of JetStream answers.
                if (child.pid === undefined || !this.startedHere(child.pid) || !(await this.acceptsOnEveryPort())) {
                    return false;
                }
                const handshake = await mqttHandshake(this._port, this._probeUser);
                if (!handshake.ok) {
                    lastHandshake = handshake.why;
                }
                return handshake.ok;
            },
            timeoutMessage: (timeoutMs) =>
                `nats-server did not answer an MQTT CONNECT within ${timeoutMs} ms (last try: ${lastHandshake})`,
        };
    }

    /** The log since this start has `[<pid>] ... Server is ready` after the MQTT listener line. */
    private startedHere(pid: number): boolean {
        const lines = this.logSinceStart().split('\n').filter((line) => line.startsWith(`[${pid}] `));
        return (
            lines.some((line) => line.includes(`Listening for MQTT clients on mqtt://${HOST}:${this._port}`)) &&
            lines.some((line) => line.endsWith('Server is ready'))
        );
    }

    private async acceptsOnEveryPort(): Promise<boolean> {
        return (await canConnect(this._port)) && (await canConnect(this._clientPort));
    }

    /** The cluster block of a cluster node: its route listener and the routes to every node. */
    private clusterConfig(): string[] {
        const cluster = this._options.cluster;
        if (!cluster) return [];
        return [
            'cluster {',
            `    name: ${quoted(cluster.name)}`,
            `    listen: "${HOST}:${cluster.port}"`,
            `    routes: [${cluster.routes.map((port) => quoted(`nats-route://${HOST}:${port}`)).join(', ')}]`,
            '}',
        ];
    }

    protected config(): string {
        const lines = [
            `server_name: ${quoted(this._serverName)}`,
            `listen: "${HOST}:${this._clientPort}"`,
            // No http/https (monitoring), gateway, leafnodes or websocket blocks (and a cluster block only for a cluster node): those
            // listeners stay closed. The limits only cap what a runaway test may store.
            'jetstream {',
            `    store_dir: ${quoted(this._storeDir)}`,
            '    max_memory_store: 268435456',
            '    max_file_store: 1073741824',
            '}',
            ...this.clusterConfig(),
            'mqtt {',
            `    listen: "${HOST}:${this._port}"`,
            ...(this._options.cluster
                ? [`    stream_replicas: ${this._options.cluster.replicas ?? 3}`, `    consumer_replicas: ${this._options.cluster.replicas ?? 3}`]
                : []),
            // NATS sends an unacknowledged QoS 1 message again after ack_wait (default 30 s), not at
            // the reconnect: 2 s keeps the acknowledgement tests short.
            '    ack_wait: "2s"',
            '}',
            `log_file: ${quoted(this.logFile)}`,
            'logtime: true',
            'debug: false',
            'trace: false',
        ];
        const passwords = this._options.passwords;
        if (passwords) {
            const users = Object.entries(passwords);
            if (this._hiddenProbeUser && this._probeUser) {
                users.push([this._probeUser.username, this._probeUser.password]);
            }
            // Users without `permissions` may publish and subscribe to everything.
            lines.push('authorization {', '    users: [');
            for (const [username, password] of users) {
                lines.push(`        { user: ${quoted(username)}, password: ${quoted(password)} }`);
            }
            lines.push('    ]', '}');
        }
        return lines.join('\n') + '\n';
    }
}

/**
 * Spawns a private nats-server with JetStream and its MQTT listener on free 127.0.0.1 ports,
 * with a config generated in a fresh temp folder, and resolves once an MQTT CONNECT gets a
 * CONNACK 0. Throws when the binary is missing, or with the config and the log tail when the
 * server does not come up.
 */
export async function startNats(options: NatsOptions = {}): Promise<NatsBroker> {
    const binary = natsBinary();
    if (!binary) {
        throw new Error('nats-server binary not found; install the Debian package nats-server (or set NATS_BIN)');
    }
    return startInTempFolder('pip-mqtt-nats-', (dir) => new NatsProcess(dir, binary, options));
}
