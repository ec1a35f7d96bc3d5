// NATS for tests: a private nats-server with its MQTT gateway, spawned on free 127.0.0.1 ports
// with a generated configuration, log and JetStream store in a temp folder.
//
// NATS serves MQTT 3.1.1 only on top of JetStream (sessions, retained messages and QoS 1 queues
// are JetStream streams), so the config names the server (`server_name`) and gives JetStream a
// store folder; both stay the same across stop/start, so persistent sessions and retained
// messages survive restart(). A system NATS on the same machine (port 4222) is left alone: every
// port here is picked free at the first start, the monitoring (http) port, cluster, gateway and
// leaf node listeners are not configured (so not opened), and /etc/nats is not read.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import mqtt, { type IClientOptions } from 'mqtt';

import { canConnect, delay, freePort, HOST, type TestBroker } from './net';

/** A fresh start takes ~0.1 s here; the first MQTT CONNECT then sets up the MQTT streams (~50 ms). */
const READY_TIMEOUT_MS = 15_000;
/** A graceful stop (SIGTERM) takes well under a second to ~2 s; after this the process is killed. */
const STOP_GRACE_MS = 10_000;
/** How long one readiness CONNECT may wait for its CONNACK. */
const CONNACK_TIMEOUT_MS = 2_000;
const POLL_MS = 50;

/** How to configure a spawned NATS server. */
export interface NatsOptions {
    /**
     * username -> password; when given, anonymous clients are refused (CONNACK 5) and these users
     * may connect, over MQTT and NATS alike, with full permissions. A password that looks like a
     * bcrypt hash (`$2a$...`) is refused here: NATS would compare against it as a hash.
     */
    passwords?: Record<string, string>;
}

/**
 * A spawned nats-server that can be stopped, killed and started again on the same ports. `url`
 * is its MQTT listener (`mqtt://127.0.0.1:<port>`, MQTT 3.1.1 only); `clientPort` its NATS one.
 */
export interface NatsBroker extends TestBroker {
    kind: 'nats';
    /** The NATS client protocol port (kept across restarts). */
    readonly clientPort: number;
    /** The process id while it runs. */
    readonly pid: number | undefined;
    /** The temp folder with the config, the log and the JetStream store. */
    readonly dir: string;
    readonly configFile: string;
    /** The server's log (appended across restarts; every line starts with `[<pid>]`). */
    readonly logFile: string;
    /** Starts again on the same ports with the same config and JetStream store; resolves once MQTT CONNECTs are answered. */
    start(): Promise<void>;
    /** Sends a terminating signal (default SIGKILL) and waits for the process to exit. */
    kill(signal?: NodeJS.Signals): Promise<void>;
    /** Stops the server and removes its temp folder. */
    cleanup(): Promise<void>;
}

function isExecutableFile(file: string): boolean {
    try {
        fs.accessSync(file, fs.constants.X_OK);
        return fs.statSync(file).isFile();
    } catch {
        return false;
    }
}

/** The nats-server binary: NATS_BIN when set (only that path), else PATH and the usual folders. */
function natsBinary(): string | undefined {
    const configured = process.env.NATS_BIN;
    if (configured) {
        return isExecutableFile(configured) ? configured : undefined;
    }
    const dirs = [
        ...(process.env.PATH ?? '').split(path.delimiter),
        '/usr/sbin',
        '/usr/local/sbin',
        '/usr/bin',
        '/usr/local/bin',
    ];
    for (const dir of dirs) {
        if (dir && isExecutableFile(path.join(dir, 'nats-server'))) {
            return path.join(dir, 'nats-server');
        }
    }
    return undefined;
}

/** True when the `nats-server` binary is found (NATS_BIN, PATH, /usr/sbin and the like). */
export function natsAvailable(): boolean {
    return natsBinary() !== undefined;
}

/** True when env REQUIRE_BROKERS is `all` or lists `nats` (comma or space separated). */
function natsRequired(): boolean {
    const required = (process.env.REQUIRE_BROKERS ?? '').toLowerCase().split(/[\s,]+/);
    return required.includes('all') || required.includes('nats');
}

/**
 * For `describe(name, { skip: natsSkip() }, ...)`: a reason when nats-server is missing, `false`
 * when it is installed, and always when REQUIRE_BROKERS is `all` or names `nats` (then the suite
 * runs and fails loudly).
 */
export function natsSkip(): string | false {
    if (natsRequired() || natsAvailable()) {
        return false;
    }
    return 'nats-server binary not found (install the Debian package nats-server, or set NATS_BIN)';
}

const children = new Set<ChildProcess>();
let exitHookInstalled = false;

/** Never leave a server behind: kill whatever is still running when the test process exits. */
function trackChild(child: ChildProcess): void {
    if (!exitHookInstalled) {
        exitHookInstalled = true;
        process.on('exit', () => {
            for (const c of children) {
                c.kill('SIGKILL');
            }
        });
    }
    children.add(child);
    child.once('exit', () => children.delete(child));
}

function tail(file: string, lines = 20): string {
    try {
        return fs.readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
    } catch {
        return '(no output)';
    }
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

class NatsProcess implements NatsBroker {
    public readonly kind = 'nats';
    public readonly host = HOST;
    public readonly logFile: string;
    public readonly configFile: string;
    private readonly _outputFile: string;
    private readonly _storeDir: string;
    private readonly _serverName: string;
    /** Who the readiness CONNECT logs in as: the first user, or a hidden one when `passwords` is empty. */
    private readonly _probeUser?: { username: string; password: string };
    private readonly _hiddenProbeUser: boolean;
    private _port = 0;
    private _clientPort = 0;
    private _logOffset = 0;
    private _child?: ChildProcess;
    private _exited?: Promise<void>;
    private _starting?: Promise<void>;
    private _stopping?: Promise<void>;

    public constructor(
        public readonly dir: string,
        private readonly _binary: string,
        private readonly _options: NatsOptions,
    ) {
        this.logFile = path.join(dir, 'nats-server.log');
        this.configFile = path.join(dir, 'nats-server.conf');
        this._outputFile = path.join(dir, 'stderr.log');
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

    public get port(): number {
        return this._port;
    }

    public get clientPort(): number {
        return this._clientPort;
    }

    public get url(): string {
        return `mqtt://${HOST}:${this._port}`;
    }

    public get pid(): number | undefined {
        return this._child?.pid;
    }

    /** First start: picks free ports, retrying when another process grabs one first. */
    public async startOnFreePort(): Promise<void> {
        for (let attempt = 1; ; attempt++) {
            this._port = await freePort();
            // Two quick freePort() calls may hand out the same port: each listener needs its own.
            do {
                this._clientPort = await freePort();
            } while (this._clientPort === this._port);
            try {
                await this.start();
                return;
            } catch (err) {
                // "[FTL] Unable to listen for MQTT connections: listen tcp 127.0.0.1:N: bind: address
                // already in use", or "[FTL] Error listening on port: 127.0.0.1:N, ..." for the client port.
                const taken = `${this.logSinceStart()}\n${tail(this._outputFile)}`.includes('address already in use');
                if (!taken || attempt >= 5) {
                    throw err;
                }
            }
        }
    }

    /** Idempotent: resolves at once when running; concurrent calls share one launch. */
    public async start(): Promise<void> {
        this._starting ??= this.launch().finally(() => {
            this._starting = undefined;
        });
        return this._starting;
    }

    private async launch(): Promise<void> {
        if (this._stopping) {
            await this._stopping;
        }
        if (this._child) {
            return;
        }
        fs.writeFileSync(this.configFile, this.config());
        this._logOffset = fs.existsSync(this.logFile) ? fs.statSync(this.logFile).size : 0;
        const output = fs.openSync(this._outputFile, 'w');
        let child: ChildProcess;
        try {
            // Only stdout/stderr of a failure before the log file is open (a config error) land here.
            child = spawn(this._binary, ['-c', this.configFile], { stdio: ['ignore', output, output] });
        } finally {
            fs.closeSync(output);
        }
        trackChild(child);
        let exited = false;
        this._child = child;
        this._exited = new Promise<void>((resolve) => {
            const gone = (): void => {
                exited = true;
                if (this._child === child) {
                    this._child = undefined;
                }
                resolve();
            };
            child.once('exit', gone);
            child.once('error', gone);
        });
        const deadline = Date.now() + READY_TIMEOUT_MS;
        let lastHandshake = 'not tried';
        // The process is referenced only while we wait on it (see finally and kill()), so a test
        // that forgets to stop the server still lets Node exit; the 'exit' hook then kills it.
        try {
            for (;;) {
                if (exited) {
                    throw this.failure(`nats-server exited during startup (code ${String(child.exitCode)})`);
                }
                // The log lines of *this* process prove it bound our ports (an old process or a
                // stranger on the port would not write them); the TCP connects prove it accepts, and
                // a CONNACK 0 that the MQTT layer on top of JetStream answers.
                if (child.pid !== undefined && this.startedHere(child.pid) && (await this.acceptsOnEveryPort())) {
                    const handshake = await mqttHandshake(this._port, this._probeUser);
                    if (handshake.ok) {
                        return;
                    }
                    lastHandshake = handshake.why;
                }
                if (Date.now() >= deadline) {
                    await this.kill('SIGKILL');
                    throw this.failure(
                        `nats-server did not answer an MQTT CONNECT within ${READY_TIMEOUT_MS} ms (last try: ${lastHandshake})`,
                    );
                }
                await delay(POLL_MS);
            }
        } finally {
            child.unref();
        }
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

    public async stop(): Promise<void> {
        this._stopping ??= this.terminate().finally(() => {
            this._stopping = undefined;
        });
        return this._stopping;
    }

    public async restart(): Promise<void> {
        await this.stop();
        await this.start();
    }

    public async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
        const child = this._child;
        if (!child || !this._exited) {
            return;
        }
        child.ref();
        try {
            child.kill(signal);
            await this._exited;
        } finally {
            child.unref();
        }
    }

    public async cleanup(): Promise<void> {
        await this.stop();
        fs.rmSync(this.dir, { recursive: true, force: true });
    }

    private async terminate(): Promise<void> {
        const child = this._child;
        const exited = this._exited;
        if (!child || !exited) {
            return;
        }
        // SIGTERM: NATS shuts JetStream down cleanly (flushes the store) and exits.
        const force = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
        try {
            await this.kill('SIGTERM');
        } finally {
            clearTimeout(force);
        }
    }

    /** The log written by the latest start() (the file is appended across restarts). */
    private logSinceStart(): string {
        try {
            return fs.readFileSync(this.logFile).subarray(this._logOffset).toString('utf8');
        } catch {
            return '';
        }
    }

    private failure(message: string): Error {
        return new Error(
            `${message} (MQTT port ${this._port}, client port ${this._clientPort})\n` +
                `--- ${this.configFile} ---\n${tail(this.configFile, 50)}\n` +
                `--- ${this.logFile} (tail) ---\n${tail(this.logFile)}\n` +
                `--- stdout/stderr ---\n${tail(this._outputFile)}`,
        );
    }

    private config(): string {
        const lines = [
            `server_name: ${quoted(this._serverName)}`,
            `listen: "${HOST}:${this._clientPort}"`,
            // No http/https (monitoring), cluster, gateway, leafnodes or websocket blocks: those
            // listeners stay closed. The limits only cap what a runaway test may store.
            'jetstream {',
            `    store_dir: ${quoted(this._storeDir)}`,
            '    max_memory_store: 268435456',
            '    max_file_store: 1073741824',
            '}',
            'mqtt {',
            `    listen: "${HOST}:${this._port}"`,
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
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pip-mqtt-nats-'));
    let broker: NatsProcess;
    try {
        broker = new NatsProcess(dir, binary, options);
    } catch (err) {
        fs.rmSync(dir, { recursive: true, force: true });
        throw err;
    }
    try {
        await broker.startOnFreePort();
    } catch (err) {
        await broker.cleanup(); // the error already carries the config and the log tail
        throw err;
    }
    return broker;
}
