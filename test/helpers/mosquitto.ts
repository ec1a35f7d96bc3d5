// Mosquitto for tests: spawned on a free port with a generated configuration in a temp folder.
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { canConnect, delay, freePort, HOST, type TestBroker } from './net';

const READY_TIMEOUT_MS = 10_000;
const STOP_GRACE_MS = 5_000;

/** The files of Mosquitto's TLS listeners (PEM files, absolute paths, readable by the broker). */
export interface MosquittoTlsOptions {
    /** The server certificate (`certfile`). */
    certfile: string;
    /** Its private key, unencrypted (`keyfile`). */
    keyfile: string;
    /** CA certificates that client certificates must chain to (`cafile`); needed with requireCertificate. */
    cafile?: string;
    /** Refuse clients without a certificate signed by `cafile` (`require_certificate true`); default false. */
    requireCertificate?: boolean;
}

/** How to configure a spawned Mosquitto. */
export interface MosquittoOptions {
    /** username -> password; when given, anonymous clients are refused. */
    passwords?: Record<string, string>;
    /** Keep sessions and queued messages in a file in the temp folder across stop/start. */
    persistence?: boolean;
    /** Per-client queue limit; default here 100000 (mosquitto's own default is 1000). */
    maxQueuedMessages?: number;
    /** Extra lines appended to the generated mosquitto.conf (listener-scoped ones apply to the plain TCP listener). */
    extraConfig?: string[];
    /** Adds a TLS listener (MQTT over TLS, `tlsUrl`) on another free port, with these files. */
    tls?: MosquittoTlsOptions;
    /** Adds a WebSocket listener (`wsUrl`) on another free port. */
    websockets?: boolean;
    /** Adds a WebSocket-over-TLS listener (`wssUrl`) on another free port, with the files of `tls` (required). */
    secureWebsockets?: boolean;
}

/**
 * A spawned Mosquitto that can be stopped, killed and started again on the same port. `url` is
 * its plain TCP listener, always there; the others exist when asked for in MosquittoOptions, each
 * on its own port, kept across restarts like `port`.
 */
export interface MosquittoBroker extends TestBroker {
    kind: 'mosquitto';
    /** With options.tls: `mqtts://127.0.0.1:<port>` (the test server certificate names IP 127.0.0.1). */
    readonly tlsUrl?: string;
    /** With options.websockets: `ws://127.0.0.1:<port>/mqtt` (Mosquitto accepts any path). */
    readonly wsUrl?: string;
    /** With options.secureWebsockets: `wss://127.0.0.1:<port>/mqtt`. */
    readonly wssUrl?: string;
    /** The process id while it runs. */
    readonly pid: number | undefined;
    readonly dir: string;
    readonly configFile: string;
    readonly logFile: string;
    /** Starts again on the same port with the same config and persistence folder. */
    start(): Promise<void>;
    /** Sends a terminating signal (default SIGKILL) and waits for the process to exit. */
    kill(signal?: NodeJS.Signals): Promise<void>;
    /** Stops the broker and removes its temp folder. */
    cleanup(): Promise<void>;
}

function findExecutable(name: string, extraDirs: string[]): string | undefined {
    const dirs = [...(process.env.PATH ?? '').split(path.delimiter), ...extraDirs];
    for (const dir of dirs) {
        if (!dir) {
            continue;
        }
        const candidate = path.join(dir, name);
        try {
            fs.accessSync(candidate, fs.constants.X_OK);
            if (fs.statSync(candidate).isFile()) {
                return candidate;
            }
        } catch {
            // not here
        }
    }
    return undefined;
}

/** The mosquitto binary: MOSQUITTO_BIN when set (only that path), else PATH and the usual folders. */
function mosquittoBinary(): string | undefined {
    const configured = process.env.MOSQUITTO_BIN;
    if (configured) {
        try {
            fs.accessSync(configured, fs.constants.X_OK);
            return configured;
        } catch {
            return undefined;
        }
    }
    return findExecutable('mosquitto', ['/usr/sbin', '/usr/local/sbin', '/usr/bin', '/usr/local/bin']);
}

/** True when the `mosquitto` binary is on PATH (or in /usr/sbin). */
export function mosquittoAvailable(): boolean {
    return mosquittoBinary() !== undefined;
}

/**
 * For `describe(name, { skip: mosquittoSkip() }, ...)`: a reason when mosquitto is missing,
 * `false` when it is installed or when REQUIRE_MOSQUITTO=1 or REQUIRE_BROKERS is `all` or names
 * `mosquitto` (then the suite runs and fails loudly).
 */
export function mosquittoSkip(): string | false {
    const required = (process.env.REQUIRE_BROKERS ?? '').toLowerCase().split(/[\s,]+/);
    if (mosquittoAvailable() || process.env.REQUIRE_MOSQUITTO === '1' || required.includes('all') || required.includes('mosquitto')) {
        return false;
    }
    return 'mosquitto binary not found (install the Debian package mosquitto, or set MOSQUITTO_BIN)';
}

const children = new Set<ChildProcess>();
let exitHookInstalled = false;

/** Never leave a broker behind: kill whatever is still running when the test process exits. */
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

function writePasswordFile(file: string, passwords: Record<string, string>, mosquitto: string): void {
    const tool =
        findExecutable('mosquitto_passwd', [path.dirname(mosquitto), '/usr/bin', '/usr/sbin', '/usr/local/bin']);
    if (!tool) {
        throw new Error('mosquitto_passwd not found; install the Debian package mosquitto');
    }
    let first = true;
    for (const [username, password] of Object.entries(passwords)) {
        if (username.includes(':')) {
            throw new Error(`mosquitto user names cannot contain ':' (${username})`);
        }
        const args = first ? ['-b', '-c', file, username, password] : ['-b', file, username, password];
        execFileSync(tool, args, { stdio: 'pipe' });
        first = false;
    }
}

function tail(file: string, lines = 20): string {
    try {
        return fs.readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
    } catch {
        return '(no output)';
    }
}

class MosquittoProcess implements MosquittoBroker {
    public readonly kind = 'mosquitto';
    public readonly host = HOST;
    public readonly logFile: string;
    public readonly configFile: string;
    private readonly _outputFile: string;
    private _port = 0;
    /** The ports of the extra listeners asked for in the options (0 until picked). */
    private _tlsPort = 0;
    private _wsPort = 0;
    private _wssPort = 0;
    private _logOffset = 0;
    private _child?: ChildProcess;
    private _exited?: Promise<void>;
    private _starting?: Promise<void>;
    private _stopping?: Promise<void>;

    public constructor(
        public readonly dir: string,
        private readonly _binary: string,
        private readonly _options: MosquittoOptions,
    ) {
        this.logFile = path.join(dir, 'mosquitto.log');
        this.configFile = path.join(dir, 'mosquitto.conf');
        this._outputFile = path.join(dir, 'stderr.log');
        if (_options.passwords) {
            writePasswordFile(path.join(dir, 'passwords'), _options.passwords, _binary);
        }
    }

    public get port(): number {
        return this._port;
    }

    public get url(): string {
        return `mqtt://${HOST}:${this._port}`;
    }

    /** The process id while it runs (the benchmark pins it to a CPU). */
    public get pid(): number | undefined {
        return this._child?.pid;
    }

    public get tlsUrl(): string | undefined {
        return this._options.tls ? `mqtts://${HOST}:${this._tlsPort}` : undefined;
    }

    public get wsUrl(): string | undefined {
        return this._options.websockets ? `ws://${HOST}:${this._wsPort}/mqtt` : undefined;
    }

    public get wssUrl(): string | undefined {
        return this._options.secureWebsockets ? `wss://${HOST}:${this._wssPort}/mqtt` : undefined;
    }

    /** First start: picks free ports, retrying when another process grabs one first. */
    public async startOnFreePort(): Promise<void> {
        for (let attempt = 1; ; attempt++) {
            const ports = new Set<number>();
            const pick = async (wanted: unknown): Promise<number> => {
                if (!wanted) {
                    return 0;
                }
                // Two quick freePort() calls may hand out the same port: every listener needs its own.
                for (;;) {
                    const port = await freePort();
                    if (!ports.has(port)) {
                        ports.add(port);
                        return port;
                    }
                }
            };
            this._port = await pick(true);
            this._tlsPort = await pick(this._options.tls);
            this._wsPort = await pick(this._options.websockets);
            this._wssPort = await pick(this._options.secureWebsockets);
            try {
                await this.start();
                return;
            } catch (err) {
                // A taken port: "Error: Address already in use" for TCP listeners, only
                // "Error: Unable to create websockets listener on port N." for WebSocket ones.
                const log = this.logSinceStart();
                const taken = log.includes('Address already in use') || log.includes('Unable to create websockets listener');
                if (!taken || attempt >= 5) {
                    throw err;
                }
            }
        }
    }

    /** Every port the broker listens on: the plain TCP one first. */
    private ports(): number[] {
        return [this._port, this._tlsPort, this._wsPort, this._wssPort].filter((port) => port !== 0);
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
            child = spawn(this._binary, ['-c', this.configFile], { stdio: ['ignore', output, output] });
        } finally {
            fs.closeSync(output);
        }
        trackChild(child);
        let exited = false;
        this._child = child;
        this._exited = new Promise<void>((resolve) => {
            child.once('exit', () => {
                exited = true;
                if (this._child === child) {
                    this._child = undefined;
                }
                resolve();
            });
            child.once('error', () => {
                exited = true;
                if (this._child === child) {
                    this._child = undefined;
                }
                resolve();
            });
        });
        const deadline = Date.now() + READY_TIMEOUT_MS;
        const startedHere = (): boolean => /mosquitto version \S+ running/.test(this.logSinceStart());
        // The process is referenced only while we wait on it (see finally and kill()), so a test
        // that forgets to stop the broker still lets Node exit; the 'exit' hook then kills it.
        try {
            for (;;) {
                if (exited) {
                    throw this.failure(`mosquitto exited during startup (code ${String(child.exitCode)})`);
                }
                // The log line proves *this* process bound the ports; the connects prove it accepts.
                if (startedHere() && (await this.acceptsOnEveryPort())) {
                    return;
                }
                if (Date.now() >= deadline) {
                    await this.kill('SIGKILL');
                    throw this.failure(`mosquitto did not accept connections within ${READY_TIMEOUT_MS} ms`);
                }
                await delay(50);
            }
        } finally {
            child.unref();
        }
    }

    private async acceptsOnEveryPort(): Promise<boolean> {
        for (const port of this.ports()) {
            if (!(await canConnect(port))) {
                return false;
            }
        }
        return true;
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
            `${message} (port${this.ports().length > 1 ? 's' : ''} ${this.ports().join(', ')})\n` +
                `--- ${this.configFile} ---\n${tail(this.configFile, 50)}\n` +
                `--- ${this.logFile} (tail) ---\n${tail(this.logFile)}\n` +
                `--- stdout/stderr ---\n${tail(this._outputFile)}`,
        );
    }

    private config(): string {
        const o = this._options;
        const lines = [`listener ${this._port} ${HOST}`];
        if (o.passwords) {
            lines.push('allow_anonymous false', `password_file ${path.join(this.dir, 'passwords')}`);
        } else {
            lines.push('allow_anonymous true');
        }
        // As root, mosquitto switches to user "mosquitto" and then cannot read our 0600 files.
        if (process.getuid?.() === 0) {
            lines.push('user root');
        }
        if (o.persistence) {
            lines.push('persistence true', `persistence_location ${this.dir}${path.sep}`);
        } else {
            lines.push('persistence false');
        }
        // mosquitto's default is 1000 per client; above that QoS 1/2 messages are dropped silently.
        lines.push(`max_queued_messages ${o.maxQueuedMessages ?? 100_000}`);
        lines.push(`log_dest file ${this.logFile}`);
        for (const type of ['error', 'warning', 'notice', 'information']) {
            lines.push(`log_type ${type}`);
        }
        lines.push(...(o.extraConfig ?? []));
        // Every extra listener comes last, so the listener-scoped lines above (extraConfig's too)
        // still belong to the plain TCP one. allow_anonymous and password_file are global
        // (per_listener_settings is false by default), so they hold on every listener. Mosquitto
        // 2.0.11 will not start with a websockets listener alone; there is always the TCP one.
        const tls = o.tls;
        const tlsLines = (): string[] => {
            if (!tls) {
                return [];
            }
            const files = [`certfile ${tls.certfile}`, `keyfile ${tls.keyfile}`];
            if (tls.cafile) {
                files.push(`cafile ${tls.cafile}`);
            }
            files.push(`require_certificate ${tls.requireCertificate ? 'true' : 'false'}`);
            return files;
        };
        if (tls) {
            lines.push(`listener ${this._tlsPort} ${HOST}`, ...tlsLines());
        }
        // Mosquitto 2.0.11 (libwebsockets) takes the address of a websockets listener but binds
        // every interface anyway (ss shows *:<port>).
        if (o.websockets) {
            lines.push(`listener ${this._wsPort} ${HOST}`, 'protocol websockets');
        }
        if (o.secureWebsockets) {
            lines.push(`listener ${this._wssPort} ${HOST}`, 'protocol websockets', ...tlsLines());
        }
        return lines.join('\n') + '\n';
    }
}

/**
 * Spawns a private mosquitto on a free 127.0.0.1 port with a config generated in a fresh temp
 * folder, and resolves once it accepts connections. Throws when the binary is missing.
 */
export async function startMosquitto(options: MosquittoOptions = {}): Promise<MosquittoBroker> {
    const binary = mosquittoBinary();
    if (!binary) {
        throw new Error('mosquitto binary not found; install the Debian package mosquitto');
    }
    if (options.secureWebsockets && !options.tls) {
        throw new Error('secureWebsockets needs the certificate files of options.tls');
    }
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pip-mqtt-mosquitto-'));
    const broker = new MosquittoProcess(dir, binary, options);
    try {
        await broker.startOnFreePort();
    } catch (err) {
        await broker.cleanup(); // the error already carries the config and the log tail
        throw err;
    }
    return broker;
}
