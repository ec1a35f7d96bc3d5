// What the test helpers that spawn a private broker (./mosquitto, ./nats, ./rabbitmq) share: finding
// the executable, the first start on free ports, the temp folder, the log since a start, the error
// of a failed start, killing what is left when the test process exits, and BrokerProcess, the
// lifecycle of a broker that is a single child process (Mosquitto, NATS; RabbitMQ runs a start
// script in a process group of its own and keeps a lifecycle of its own).
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import mqtt, { type IClientOptions } from 'mqtt';

import { delay, freePort, HOST, type TestBroker } from './net';

/** A broker the test helpers spawn (Mosquitto, NATS, RabbitMQ): a TestBroker with its process and files. */
export interface SpawnedTestBroker extends TestBroker {
    /** The process id while it runs. */
    readonly pid: number | undefined;
    /** The temp folder with the broker's configuration, data and log. */
    readonly dir: string;
    /** The generated configuration file. */
    readonly configFile: string;
    /** The broker's log (appended across restarts). */
    readonly logFile: string;
    /** Starts again on the same ports with the same configuration and data. */
    start(): Promise<void>;
    /** Sends a terminating signal (default SIGKILL) and waits for the process to exit. */
    kill(signal?: NodeJS.Signals): Promise<void>;
    /** Stops the broker and removes its temp folder. */
    cleanup(): Promise<void>;
}

/** How often a start checks whether the broker is ready. */
const POLL_MS = 50;
/** How many times startOnFreePorts() tries (new ports each time) while the ports turn out taken. */
const PORT_ATTEMPTS = 5;

// ---------------------------------------------------------------- executables and skipping

/** The folders searched after PATH for a broker's executable. */
export const SYSTEM_BIN_DIRS = ['/usr/sbin', '/usr/local/sbin', '/usr/bin', '/usr/local/bin'];

/** True when `file` is a file the current user may execute. */
export function isExecutableFile(file: string): boolean {
    try {
        fs.accessSync(file, fs.constants.X_OK);
        return fs.statSync(file).isFile();
    } catch {
        return false;
    }
}

/** The first executable file `name` in a folder of PATH, else of `extraDirs`. */
export function findExecutable(name: string, extraDirs: string[]): string | undefined {
    const dirs = [...(process.env.PATH ?? '').split(path.delimiter), ...extraDirs];
    for (const dir of dirs) {
        if (dir && isExecutableFile(path.join(dir, name))) {
            return path.join(dir, name);
        }
    }
    return undefined;
}

/**
 * The executable `name`: the path in env `variable` when that is set (only that path, and only
 * when it is an executable file), else the first one on PATH or in SYSTEM_BIN_DIRS.
 */
export function configuredExecutable(variable: string, name: string): string | undefined {
    const configured = process.env[variable];
    if (configured) {
        return isExecutableFile(configured) ? configured : undefined;
    }
    return findExecutable(name, SYSTEM_BIN_DIRS);
}

/** True when env REQUIRE_BROKERS is `all` or lists `kind` (comma or space separated, any case). */
export function brokerRequired(kind: string): boolean {
    const required = (process.env.REQUIRE_BROKERS ?? '').toLowerCase().split(/[\s,]+/);
    return required.includes('all') || required.includes(kind);
}

// ---------------------------------------------------------------- spawning

/**
 * Spawns `file` detached (a process group of its own, to be killed as a whole), in `cwd` with
 * `env`, its stdout and stderr written to `outputFile` (rewritten).
 */
export function spawnDetached(file: string, args: string[], cwd: string, env: NodeJS.ProcessEnv, outputFile: string): ChildProcess {
    const output = fs.openSync(outputFile, 'w');
    try {
        return spawn(file, args, { cwd, env, detached: true, stdio: ['ignore', output, output] });
    } finally {
        fs.closeSync(output);
    }
}

// ---------------------------------------------------------------- readiness

/**
 * The CONNACK return code of one MQTT 3.1.1 CONNECT to `url` (clean session, a random client id,
 * no reconnects, 3 s unless `options` say otherwise), undefined when no CONNACK came.
 */
export function connackCode(url: string, options: IClientOptions = {}): Promise<number | undefined> {
    return new Promise((resolve) => {
        const client = mqtt.connect(url, {
            protocolVersion: 4,
            clientId: `pip-mqtt-ready-${randomBytes(4).toString('hex')}`,
            clean: true,
            reconnectPeriod: 0,
            connectTimeout: 3000,
            ...options,
        });
        let settled = false;
        const done = (code: number | undefined): void => {
            if (!settled) {
                settled = true;
                client.end(true);
                resolve(code);
            }
        };
        client.once('connect', (packet) => done(packet.returnCode ?? 0));
        client.on('error', (err: Error & { code?: unknown }) => done(typeof err.code === 'number' ? err.code : undefined));
        client.once('close', () => done(undefined));
    });
}

// ---------------------------------------------------------------- files

/** The last `lines` lines of a text file, or `missing` when it cannot be read. */
export function tail(file: string, lines = 20, missing = '(no output)'): string {
    try {
        return fs.readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
    } catch {
        return missing;
    }
}

/** The size of a file in bytes, 0 when there is none (where a start begins to append to a log). */
export function fileSize(file: string): number {
    return fs.existsSync(file) ? fs.statSync(file).size : 0;
}

/** A file's text from byte `offset` on (what was appended since then), '' when it cannot be read. */
export function readFrom(file: string, offset: number): string {
    try {
        return fs.readFileSync(file).subarray(offset).toString('utf8');
    } catch {
        return '';
    }
}

/** The error of a broker that did not start: `headline`, then each section as `--- title ---` and its text. */
export function startupFailure(headline: string, sections: Array<[title: string, text: string]>): Error {
    return new Error([headline, ...sections.map(([title, text]) => `--- ${title} ---\n${text}`)].join('\n'));
}

// ---------------------------------------------------------------- starting

/** `count` different TCP ports that were free a moment ago (quick freePort() calls may repeat one). */
export async function freePorts(count: number): Promise<number[]> {
    const ports = new Set<number>();
    while (ports.size < count) {
        ports.add(await freePort());
    }
    return [...ports];
}

/**
 * A first start on free ports: `pickPorts()`, then `start()`; when that fails and `portTaken()`
 * (asked right after the failure) finds that another process bound one of the ports first, again
 * with new ports, up to 5 tries in all. Any other failure, or the last, is thrown.
 */
export async function startOnFreePorts(
    pickPorts: () => Promise<void>,
    start: () => Promise<void>,
    portTaken: () => boolean,
): Promise<void> {
    for (let attempt = 1; ; attempt++) {
        await pickPorts();
        try {
            await start();
            return;
        } catch (err) {
            if (!portTaken() || attempt >= PORT_ATTEMPTS) {
                throw err;
            }
        }
    }
}

/** What startInTempFolder() needs of a broker. */
export interface StartsOnFreePort {
    /** The first start, on free ports. */
    startOnFreePort(): Promise<void>;
    /** Stops the broker and removes its folder. */
    cleanup(): Promise<void>;
}

/**
 * Makes a fresh temp folder (`<tmpdir>/<prefix>XXXXXX`), constructs the broker in it and starts it
 * on free ports. When the constructor throws, the folder is removed; when the start fails, the
 * broker is cleaned up (stopped, folder removed). Either error is passed on: a start error already
 * carries the config and the log tail.
 */
export async function startInTempFolder<B extends StartsOnFreePort>(prefix: string, construct: (dir: string) => B): Promise<B> {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
    // A test that only stop()s its broker (TestBroker has no cleanup) must not leave the folder behind.
    removeOnExit(dir);
    let broker: B;
    try {
        broker = construct(dir);
    } catch (err) {
        fs.rmSync(dir, { recursive: true, force: true });
        throw err;
    }
    try {
        await broker.startOnFreePort();
    } catch (err) {
        await broker.cleanup();
        throw err;
    }
    return broker;
}

// ---------------------------------------------------------------- process lifetime

/** Something to kill when the test process exits: synchronously, as nothing asynchronous runs then. */
export interface KilledOnExit {
    killNow(): void;
}

const killedOnExit = new Set<KilledOnExit>();
/** The temp folders of the brokers started by this process, removed when it exits (after the kills). */
const removedOnExit = new Set<string>();
let exitHookInstalled = false;

function installExitHook(): void {
    if (exitHookInstalled) return;
    exitHookInstalled = true;
    process.on('exit', () => {
        for (const t of killedOnExit) {
            t.killNow();
        }
        for (const dir of removedOnExit) {
            try {
                fs.rmSync(dir, { recursive: true, force: true });
            } catch {
                // Best effort: the process is exiting.
            }
        }
    });
}

/** Removes `dir` (recursively) when the test process exits. */
export function removeOnExit(dir: string): void {
    installExitHook();
    removedOnExit.add(dir);
}

/** Never leave a broker behind: `target.killNow()` runs when the test process exits, unless forgotten first. */
export function killOnExit(target: KilledOnExit): void {
    installExitHook();
    killedOnExit.add(target);
}

/** Undoes killOnExit(target) (the broker is gone). */
export function forgetOnExit(target: KilledOnExit): void {
    killedOnExit.delete(target);
}

/** SIGKILLs the child when the test process exits while it still runs. */
function trackChild(child: ChildProcess): void {
    const target: KilledOnExit = { killNow: () => child.kill('SIGKILL') };
    killOnExit(target);
    child.once('exit', () => forgetOnExit(target));
}

/**
 * One run of an async task at a time: run() while the task runs returns that same run, so
 * concurrent start() (or stop()) calls share one launch.
 */
export class SingleFlight {
    private _current?: Promise<void>;

    /** The run in progress, if any. */
    public get current(): Promise<void> | undefined {
        return this._current;
    }

    public run(task: () => Promise<void>): Promise<void> {
        this._current ??= task().finally(() => {
            this._current = undefined;
        });
        return this._current;
    }
}

// ---------------------------------------------------------------- BrokerProcess

/** How a BrokerProcess runs its broker. */
export interface BrokerProcessSettings {
    /** The broker's name in error messages: `mosquitto`, `nats-server`. */
    name: string;
    executable: string;
    /** The executable's arguments; it is started with the current folder and environment. */
    args: string[];
    /** The configuration file: config() is written there before every start. */
    configFile: string;
    /** The broker's own log file, appended across restarts. */
    logFile: string;
    /** How long a start may take until the broker is ready; then it is killed and start() fails. */
    readyTimeoutMs: number;
    /** How long stop() waits after SIGTERM before it sends SIGKILL. */
    stopGraceMs: number;
}

/** One start's readiness check (see BrokerProcess.readiness()). */
export interface Readiness {
    /** Polled every 50 ms while the process runs: true once the broker serves. */
    ready(): Promise<boolean>;
    /** The message of the error when it was not ready within `timeoutMs` (then it has been killed). */
    timeoutMessage(timeoutMs: number): string;
}

/**
 * A broker spawned as one child process with a generated config in its temp folder `dir`: it
 * can be stopped, killed and started again on the same ports. Its stdout and stderr go to
 * `<dir>/stderr.log` (rewritten at every start). The process is referenced only while a call
 * waits on it, so a test that forgets to stop the broker still lets Node exit; an 'exit' hook
 * then kills it. Subclasses pick the ports, write the config and say when the broker is ready.
 */
export abstract class BrokerProcess implements StartsOnFreePort {
    public readonly host = HOST;
    public readonly configFile: string;
    public readonly logFile: string;
    /** The process's stdout and stderr, of the latest start. */
    protected readonly outputFile: string;
    /** The MQTT port: 0 until pickPorts() sets it, then kept across restarts. */
    protected _port = 0;
    private _logOffset = 0;
    private _child?: ChildProcess;
    private _exited?: Promise<void>;
    private readonly _starting = new SingleFlight();
    private readonly _stopping = new SingleFlight();

    protected constructor(
        public readonly dir: string,
        private readonly _settings: BrokerProcessSettings,
    ) {
        this.configFile = _settings.configFile;
        this.logFile = _settings.logFile;
        this.outputFile = path.join(dir, 'stderr.log');
    }

    public get port(): number {
        return this._port;
    }

    public get url(): string {
        return `mqtt://${HOST}:${this._port}`;
    }

    /** The process id while it runs. */
    public get pid(): number | undefined {
        return this._child?.pid;
    }

    /** First start: picks free ports, retrying when another process grabs one first. */
    public async startOnFreePort(): Promise<void> {
        await startOnFreePorts(
            () => this.pickPorts(),
            () => this.start(),
            () => this.portTaken(),
        );
    }

    /** Idempotent: resolves at once when running; concurrent calls share one launch. */
    public async start(): Promise<void> {
        return this._starting.run(() => this.launch());
    }

    /** Graceful: SIGTERM, then SIGKILL after the grace period; concurrent calls share one stop. */
    public async stop(): Promise<void> {
        return this._stopping.run(() => this.terminate());
    }

    public async restart(): Promise<void> {
        await this.stop();
        await this.start();
    }

    /** Sends a terminating signal (default SIGKILL) and waits for the process to exit. */
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

    /** Stops the broker and removes its temp folder. */
    public async cleanup(): Promise<void> {
        await this.stop();
        fs.rmSync(this.dir, { recursive: true, force: true });
    }

    /** Sets _port (and any other port of the broker) to free ports, for the first start. */
    protected abstract pickPorts(): Promise<void>;

    /** After a failed first start: whether it failed because another process had taken a port. */
    protected abstract portTaken(): boolean;

    /** The configuration file's text, for the ports picked. */
    protected abstract config(): string;

    /** A fresh readiness check for the start of `child`. */
    protected abstract readiness(child: ChildProcess): Readiness;

    /** Where the broker listens, for error messages: `port 1883`, `MQTT port 1883, client port 4222`. */
    protected abstract where(): string;

    /** The log written by the latest start() (the file is appended across restarts). */
    protected logSinceStart(): string {
        return readFrom(this.logFile, this._logOffset);
    }

    /** An error with `message`, where the broker listens, its config and the tails of its log and output. */
    protected failure(message: string): Error {
        return startupFailure(`${message} (${this.where()})`, [
            [this.configFile, tail(this.configFile, 50)],
            [`${this.logFile} (tail)`, tail(this.logFile)],
            ['stdout/stderr', tail(this.outputFile)],
        ]);
    }

    private async launch(): Promise<void> {
        await this._stopping.current;
        if (this._child) {
            return;
        }
        const settings = this._settings;
        fs.writeFileSync(this.configFile, this.config());
        this._logOffset = fileSize(this.logFile);
        const output = fs.openSync(this.outputFile, 'w');
        let child: ChildProcess;
        try {
            // In its folder: NATS writes consumer files (meta.inf) into its working directory at a restart.
            child = spawn(settings.executable, settings.args, { cwd: this.dir, stdio: ['ignore', output, output] });
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
        const readiness = this.readiness(child);
        const deadline = Date.now() + settings.readyTimeoutMs;
        // Referenced only while we wait on it (see finally and kill()).
        try {
            for (;;) {
                if (exited) {
                    throw this.failure(`${settings.name} exited during startup (code ${String(child.exitCode)})`);
                }
                if (await readiness.ready()) {
                    return;
                }
                if (Date.now() >= deadline) {
                    await this.kill('SIGKILL');
                    throw this.failure(readiness.timeoutMessage(settings.readyTimeoutMs));
                }
                await delay(POLL_MS);
            }
        } finally {
            child.unref();
        }
    }

    private async terminate(): Promise<void> {
        const child = this._child;
        if (!child || !this._exited) {
            return;
        }
        // SIGTERM asks for a clean shutdown; SIGKILL when it takes longer than stopGraceMs.
        const force = setTimeout(() => child.kill('SIGKILL'), this._settings.stopGraceMs);
        try {
            await this.kill('SIGTERM');
        } finally {
            clearTimeout(force);
        }
    }
}
