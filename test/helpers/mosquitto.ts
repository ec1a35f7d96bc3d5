// Mosquitto for tests: spawned on a free port with a generated configuration in a temp folder.
import { execFileSync } from 'node:child_process';
import * as path from 'node:path';

import {
    BrokerProcess,
    brokerRequired,
    configuredExecutable,
    findExecutable,
    freePorts,
    startInTempFolder,
    type Readiness,
    type SpawnedTestBroker,
} from './brokerProcess';
import { canConnect, HOST } from './net';

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
export interface MosquittoBroker extends SpawnedTestBroker {
    kind: 'mosquitto';
    /** With options.tls: `mqtts://127.0.0.1:<port>` (the test server certificate names IP 127.0.0.1). */
    readonly tlsUrl?: string;
    /** With options.websockets: `ws://127.0.0.1:<port>/mqtt` (Mosquitto accepts any path). */
    readonly wsUrl?: string;
    /** With options.secureWebsockets: `wss://127.0.0.1:<port>/mqtt`. */
    readonly wssUrl?: string;
    /** The process id while it runs (the benchmark pins it to a CPU). */
    readonly pid: number | undefined;
}

/** The mosquitto binary: MOSQUITTO_BIN when set (only that path), else PATH and the usual folders. */
function mosquittoBinary(): string | undefined {
    return configuredExecutable('MOSQUITTO_BIN', 'mosquitto');
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
    if (mosquittoAvailable() || process.env.REQUIRE_MOSQUITTO === '1' || brokerRequired('mosquitto')) {
        return false;
    }
    return 'mosquitto binary not found (install the Debian package mosquitto, or set MOSQUITTO_BIN)';
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

class MosquittoProcess extends BrokerProcess implements MosquittoBroker {
    public readonly kind = 'mosquitto';
    /** The ports of the extra listeners asked for in the options (0 until picked). */
    private _tlsPort = 0;
    private _wsPort = 0;
    private _wssPort = 0;

    public constructor(
        dir: string,
        binary: string,
        private readonly _options: MosquittoOptions,
    ) {
        const configFile = path.join(dir, 'mosquitto.conf');
        super(dir, {
            name: 'mosquitto',
            executable: binary,
            args: ['-c', configFile],
            configFile,
            logFile: path.join(dir, 'mosquitto.log'),
            readyTimeoutMs: READY_TIMEOUT_MS,
            stopGraceMs: STOP_GRACE_MS,
        });
        if (_options.passwords) {
            writePasswordFile(path.join(dir, 'passwords'), _options.passwords, binary);
        }
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

    /** A free port for the plain TCP listener, and one for each extra listener asked for. */
    protected async pickPorts(): Promise<void> {
        const o = this._options;
        const extra = [o.tls, o.websockets, o.secureWebsockets].map(Boolean);
        const [port, ...others] = await freePorts(1 + extra.filter((wanted) => wanted).length);
        this._port = port;
        [this._tlsPort, this._wsPort, this._wssPort] = extra.map((wanted) => (wanted ? (others.shift() ?? 0) : 0));
    }

    protected portTaken(): boolean {
        // "Error: Address already in use" for TCP listeners, only
        // "Error: Unable to create websockets listener on port N." for WebSocket ones.
        const log = this.logSinceStart();
        return log.includes('Address already in use') || log.includes('Unable to create websockets listener');
    }

    /** Every port the broker listens on: the plain TCP one first. */
    private ports(): number[] {
        return [this._port, this._tlsPort, this._wsPort, this._wssPort].filter((port) => port !== 0);
    }

    protected where(): string {
        return `port${this.ports().length > 1 ? 's' : ''} ${this.ports().join(', ')}`;
    }

    protected readiness(): Readiness {
        return {
            // The log line proves *this* process bound the ports; the connects prove it accepts.
            ready: async () => this.startedHere() && (await this.acceptsOnEveryPort()),
            timeoutMessage: (timeoutMs) => `mosquitto did not accept connections within ${timeoutMs} ms`,
        };
    }

    /** The log since this start has the line `mosquitto version <version> running`. */
    private startedHere(): boolean {
        return /mosquitto version \S+ running/.test(this.logSinceStart());
    }

    private async acceptsOnEveryPort(): Promise<boolean> {
        for (const port of this.ports()) {
            if (!(await canConnect(port))) {
                return false;
            }
        }
        return true;
    }

    protected config(): string {
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
    return startInTempFolder('pip-mqtt-mosquitto-', (dir) => new MosquittoProcess(dir, binary, options));
}
