// RabbitMQ for tests: a private node with the rabbitmq_mqtt plugin, on free 127.0.0.1 ports, with
// its own node name, Erlang cookie, configuration and data in a temp folder.
//
// The node is started from RabbitMQ's own start script (/usr/lib/rabbitmq/bin/rabbitmq-server on
// Debian), not from the /usr/sbin wrapper: as root the wrapper `cd`s to /var/lib/rabbitmq and runs
// the script through `su rabbitmq`, which needs the folders chowned to that user, puts two more
// processes between us and the Erlang VM and shares the system node's cookie. Run directly, the
// node runs as the current user (root or not), with HOME set to the temp folder (so a private
// .erlang.cookie), and in a process group of its own that holds the script and beam.smp.
// A system RabbitMQ on the same machine is left alone: other ports, node name and folders, and
// /etc/rabbitmq is not read (every file the node would look for there is pointed into the folder).
// The node registers with the machine's epmd (port 4369), starting one when none runs (that epmd
// then stays, as with any Erlang node); a cluster node (options.cluster, see rabbitmqCluster.ts)
// registers with its cluster's private epmd instead. No rabbitmqctl is needed to start, stop or add users.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

import {
    brokerRequired,
    connackCode,
    spawnDetached,
    fileSize,
    findExecutable,
    forgetOnExit,
    freePorts,
    isExecutableFile,
    killOnExit,
    readFrom,
    SingleFlight,
    type SpawnedTestBroker,
    startInTempFolder,
    startOnFreePorts,
    startupFailure,
    SYSTEM_BIN_DIRS,
    tail,
} from './brokerProcess';
import { canConnect, delay, HOST } from './net';

/**
 * Measured on 2 CPUs: a first boot takes 10-17 s (Erlang loads ~1000 modules, and the MQTT plugin
 * waits a fixed random 3-6 s for cluster peers), a start from existing data 6-13 s.
 */
const READY_TIMEOUT_MS = 90_000;
/** A graceful stop takes ~1 s; after this the process group is killed. */
const STOP_GRACE_MS = 20_000;
const POLL_MS = 100;
/** The CONNACK codes of a refused login (MQTT 3.1.1): bad user name or password, not authorized. */
const REFUSED_LOGIN = new Set([4, 5]);
/** The MQTT user of anonymous connections when no passwords are given (mqtt.default_user). */
const ANONYMOUS_USER = 'guest';
/** An Erlang argument the VM ignores; it puts the node name into beam.smp's command line for `ps`. */
const MARKER_ARG = '-pip_mqtt_test_node';
const CTL_TIMEOUT_MS = 60_000;

const execFileAsync = promisify(execFile);

/** How to configure a spawned RabbitMQ node. */
export interface RabbitMqOptions {
    /**
     * username -> password; when given, these users exist (full permissions on vhost `/`) and
     * anonymous MQTT logins are refused (`mqtt.allow_anonymous = false`). Without it anonymous
     * MQTT logins are accepted (as user `guest`, password `guest`, which also logs in explicitly).
     */
    passwords?: Record<string, string>;
    /**
     * A member of a cluster (see rabbitmqCluster.ts): its node name, fixed in advance because the
     * peers' configuration names it; the cluster's Erlang cookie (nodes with different cookies
     * refuse each other); and the port of the cluster's private epmd, where the node, its
     * rabbitmqctl and its peers look one another up (ERL_EPMD_PORT), so nothing registers with
     * the machine's epmd on 4369. The node does not start an epmd of its own: when the private
     * one is not running, the start fails.
     */
    cluster?: { readonly nodeName: string; readonly cookie: string; readonly epmdPort: number };
    /** Lines appended to rabbitmq.conf (a cluster's peer discovery and queue type, say). */
    config?: readonly string[];
}

/**
 * A private RabbitMQ node with the MQTT plugin. `url` is its MQTT listener. `stop()` is graceful,
 * `restart()` stops and starts it again with the same ports, node name and data folder (so durable
 * queues, durable MQTT sessions and retained messages survive it).
 */
export interface RabbitMqBroker extends SpawnedTestBroker {
    kind: 'rabbitmq';
    /** The Erlang node name, unique per startRabbitMq(): `pip-mqtt-<hex>@localhost`. */
    readonly nodeName: string;
    /**
     * The temp folder with configuration, data and logs; also the node's HOME (its .erlang.cookie),
     * so `HOME=<dir> /usr/lib/rabbitmq/bin/rabbitmqctl -n <nodeName> list_queues` reaches it.
     */
    readonly dir: string;
    /** The node's log (appended across restarts). */
    readonly logFile: string;
    /** The generated rabbitmq.conf. */
    readonly configFile: string;
    /** The AMQP 0-9-1 listener's port. */
    readonly amqpPort: number;
    /** The Erlang distribution port (registered with the machine's epmd on 4369, or the cluster's private epmd). */
    readonly distPort: number;
    /** The Erlang VM's process id while it runs (from the PID file), else undefined. */
    readonly pid: number | undefined;
    /** Starts again with the same ports, node name and data folder; resolves once MQTT logins are answered. */
    start(): Promise<void>;
    /**
     * A quicker bounce than restart() (2-3 s instead of 7-14 s): `rabbitmqctl stop_app` then
     * `start_app`. The listeners close and every connection drops as in restart(), and RabbitMQ
     * starts again from its data folder, but the Erlang VM stays (same pid). Needs a running node.
     */
    restartApp(): Promise<void>;
    /** Runs `rabbitmqctl -q -n <nodeName> ...args` against this node and resolves with its output. */
    rabbitmqctl(...args: string[]): Promise<string>;
    /**
     * Sends `signal` (default SIGKILL) to the node's process group and waits until the VM is gone.
     * After a SIGKILL, start() recovers durable sessions and their QoS 1 messages (redelivered
     * with dup set), but retained messages set in the last seconds are lost (their store is a
     * RAM-backed DETS file saved now and then: set 3 s before the kill, lost; 12 s before, kept).
     */
    kill(signal?: NodeJS.Signals): Promise<void>;
    /** Stops the node, kills any process left of it and removes its temp folder. */
    cleanup(): Promise<void>;
}

// ---------------------------------------------------------------- binaries and skipping

/**
 * The rabbitmq-server start script itself: Debian's /usr/sbin/rabbitmq-server is a link to a
 * wrapper (rabbitmq-script-wrapper) that runs the script of that name next to it as user rabbitmq.
 */
function unwrap(file: string): string | undefined {
    let real: string;
    try {
        real = fs.realpathSync(file);
    } catch {
        return undefined;
    }
    if (path.basename(real) === 'rabbitmq-script-wrapper') {
        const script = path.join(path.dirname(real), 'rabbitmq-server');
        return isExecutableFile(script) ? script : undefined;
    }
    return isExecutableFile(real) ? real : undefined;
}

/**
 * The rabbitmq-server start script: RABBITMQ_SERVER_BIN when set (only that path), else Debian's
 * /usr/lib/rabbitmq/bin/rabbitmq-server, else rabbitmq-server on PATH or in the sbin folders.
 */
function rabbitmqServerScript(): string | undefined {
    const configured = process.env.RABBITMQ_SERVER_BIN;
    if (configured) {
        return unwrap(configured);
    }
    const debian = '/usr/lib/rabbitmq/bin/rabbitmq-server';
    if (isExecutableFile(debian)) {
        return debian;
    }
    const found = findExecutable('rabbitmq-server', SYSTEM_BIN_DIRS);
    return found ? unwrap(found) : undefined;
}

/** True when the rabbitmq-server script is installed (RABBITMQ_SERVER_BIN, /usr/lib/rabbitmq/bin, /usr/sbin). */
export function rabbitmqAvailable(): boolean {
    return rabbitmqServerScript() !== undefined;
}

/**
 * Whether the installation next to the script has the MQTT plugin: true or false when a plugins
 * folder is found (Debian: ../lib/rabbitmq_server-<version>/plugins, generic: ../plugins),
 * undefined when none is (then starting the node is the only way to find out).
 */
function mqttPluginInstalled(script: string): boolean | undefined {
    const root = path.dirname(path.dirname(script));
    const folders = [path.join(root, 'plugins')];
    try {
        for (const entry of fs.readdirSync(path.join(root, 'lib'))) {
            if (entry.startsWith('rabbitmq_server-')) {
                folders.push(path.join(root, 'lib', entry, 'plugins'));
            }
        }
    } catch {
        // no lib folder
    }
    let found: boolean | undefined;
    for (const folder of folders) {
        try {
            const entries = fs.readdirSync(folder);
            found = found === true || entries.some((entry) => /^rabbitmq_mqtt-\d/.test(entry));
        } catch {
            // not there
        }
    }
    return found;
}

/**
 * For `describe(name, { skip: rabbitmqSkip() }, ...)`: a reason when RabbitMQ is not installed or
 * cannot run here (no MQTT plugin, no Erlang `erl`, no writable temp folder); `false` when it can,
 * and always when REQUIRE_BROKERS is `all` or names `rabbitmq` (then the suite runs and fails
 * loudly). Root is not needed: the node runs as the current user, in folders it owns.
 */
export function rabbitmqSkip(): string | false {
    if (brokerRequired('rabbitmq')) {
        return false;
    }
    const script = rabbitmqServerScript();
    if (!script) {
        return 'rabbitmq-server not found (install the Debian package rabbitmq-server, or set RABBITMQ_SERVER_BIN)';
    }
    if (mqttPluginInstalled(script) === false) {
        return `the RabbitMQ installation of ${script} has no rabbitmq_mqtt plugin`;
    }
    if (!findExecutable('erl', [])) {
        return 'Erlang (erl) not found on PATH: rabbitmq-server cannot start';
    }
    try {
        fs.accessSync(os.tmpdir(), fs.constants.W_OK);
    } catch {
        return `the temp folder ${os.tmpdir()} is not writable: no place for the node's data`;
    }
    return false;
}

// ---------------------------------------------------------------- process tracking

/** Whether a process runs; a zombie (exited, not reaped yet: an orphaned VM waits for pid 1) does not. */
function running(pid: number): boolean {
    if (fs.existsSync('/proc/self/stat')) {
        try {
            // "pid (comm) S ...": the state letter follows the last ')'.
            const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
            const state = stat.charAt(stat.lastIndexOf(')') + 2);
            return state !== 'Z' && state !== 'X';
        } catch {
            return false;
        }
    }
    try {
        process.kill(pid, 0);
        return true;
    } catch (err) {
        return (err as NodeJS.ErrnoException).code === 'EPERM';
    }
}

function signal(pid: number, sig: NodeJS.Signals): void {
    try {
        process.kill(pid, sig);
    } catch {
        // already gone
    }
}

/** Running processes whose command line holds every one of `needles` (Linux /proc; else none). */
function processesWith(needles: string[]): number[] {
    let entries: string[];
    try {
        entries = fs.readdirSync('/proc');
    } catch {
        return [];
    }
    const pids: number[] = [];
    for (const entry of entries) {
        if (!/^\d+$/.test(entry)) {
            continue;
        }
        let args: string[];
        try {
            args = fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
        } catch {
            continue;
        }
        if (needles.every((needle) => args.includes(needle)) && running(Number(entry))) {
            pids.push(Number(entry));
        }
    }
    return pids;
}

/**
 * A detached shell that outlives a test process killed by a signal (no 'exit' hook then): once
 * `owner` is gone it SIGKILLs the process group `group` (a node's; a cluster's epmd). It ends by
 * itself when the group ends.
 */
export function spawnWatchdog(owner: number, group: number): ChildProcess | undefined {
    const script =
        `while kill -0 ${owner} 2>/dev/null && kill -0 -${group} 2>/dev/null; do sleep 1; done; ` +
        `kill -0 ${owner} 2>/dev/null || kill -KILL -${group} 2>/dev/null; exit 0`;
    try {
        const watchdog = spawn('/bin/sh', ['-c', script], { detached: true, stdio: 'ignore' });
        watchdog.on('error', () => undefined);
        watchdog.unref();
        return watchdog;
    } catch {
        return undefined;
    }
}

// ---------------------------------------------------------------- configuration

/** RabbitMQ's password hash (rabbit_password_hashing_sha256): base64(salt + sha256(salt + password)). */
function passwordHash(password: string): string {
    const salt = randomBytes(4);
    const digest = createHash('sha256').update(Buffer.concat([salt, Buffer.from(password, 'utf8')])).digest();
    return Buffer.concat([salt, digest]).toString('base64');
}

/** Definitions imported at every boot: vhost `/` and the users with full permissions on it. */
function definitions(users: Record<string, string>): string {
    const names = Object.keys(users);
    return JSON.stringify(
        {
            vhosts: [{ name: '/' }],
            users: names.map((name) => ({
                name,
                password_hash: passwordHash(users[name]),
                hashing_algorithm: 'rabbit_password_hashing_sha256',
                tags: 'administrator',
            })),
            permissions: names.map((user) => ({ user, vhost: '/', configure: '.*', write: '.*', read: '.*' })),
        },
        null,
        2,
    );
}

/** The environment of the node: the test process's, minus RabbitMQ and Erlang settings of its own. */
function baseEnvironment(): NodeJS.ProcessEnv {
    const env: NodeJS.ProcessEnv = {};
    for (const [key, value] of Object.entries(process.env)) {
        const foreign =
            key.startsWith('RABBITMQ_') ||
            ['ERL_FLAGS', 'ERL_AFLAGS', 'ERL_ZFLAGS', 'ERL_LIBS', 'NOTIFY_SOCKET'].includes(key);
        if (!foreign) {
            env[key] = value;
        }
    }
    return env;
}

// ---------------------------------------------------------------- the node

class RabbitMqProcess implements RabbitMqBroker {
    public readonly kind = 'rabbitmq';
    public readonly host = HOST;
    public readonly nodeName: string;
    public readonly logFile: string;
    public readonly configFile: string;
    private readonly _outputFile: string;
    private readonly _pidFile: string;
    private _port = 0;
    private _amqpPort = 0;
    private _distPort = 0;
    private _logOffset = 0;
    private _child?: ChildProcess;
    private _group?: number;
    private _beamPid?: number;
    private _watchdog?: ChildProcess;
    private _exited?: Promise<void>;
    private readonly _starting = new SingleFlight();
    private readonly _stopping = new SingleFlight();

    public constructor(
        public readonly dir: string,
        private readonly _script: string,
        private readonly _options: RabbitMqOptions,
    ) {
        this.nodeName = _options.cluster?.nodeName ?? `pip-mqtt-${randomBytes(4).toString('hex')}@localhost`;
        this.logFile = path.join(dir, 'log', 'rabbit.log');
        this.configFile = path.join(dir, 'rabbitmq.conf');
        this._outputFile = path.join(dir, 'stdout.log');
        this._pidFile = path.join(dir, 'rabbit.pid');
        fs.mkdirSync(path.join(dir, 'mnesia'));
        fs.mkdirSync(path.join(dir, 'log'));
        fs.writeFileSync(path.join(dir, 'enabled_plugins'), '[rabbitmq_mqtt].\n');
        fs.writeFileSync(path.join(dir, 'rabbitmq-env.conf'), '# intentionally empty: not /etc/rabbitmq/rabbitmq-env.conf\n');
        // The node's and any rabbitmqctl's cookie (HOME is this folder): owner-only, as Erlang requires.
        const cookie = _options.cluster?.cookie ?? randomBytes(15).toString('hex').toUpperCase();
        fs.writeFileSync(path.join(dir, '.erlang.cookie'), cookie, { mode: 0o400 });
        fs.writeFileSync(
            path.join(dir, 'definitions.json'),
            definitions(_options.passwords ?? { [ANONYMOUS_USER]: ANONYMOUS_USER }),
            { mode: 0o600 },
        );
    }

    public get port(): number {
        return this._port;
    }

    public get amqpPort(): number {
        return this._amqpPort;
    }

    public get distPort(): number {
        return this._distPort;
    }

    public get url(): string {
        return `mqtt://${HOST}:${this._port}`;
    }

    public get pid(): number | undefined {
        return this._beamPid !== undefined && running(this._beamPid) ? this._beamPid : undefined;
    }

    /** First start: picks free ports, retrying when another process grabs one first. */
    public async startOnFreePort(): Promise<void> {
        await startOnFreePorts(
            async () => {
                [this._port, this._amqpPort, this._distPort] = await freePorts(3);
            },
            () => this.start(),
            // A taken listener port: eaddrinuse in the log; a taken distribution port:
            // dist_port_already_used on stdout (before logging is set up).
            () => /eaddrinuse|dist_port_already_used/.test(this.logSinceStart() + tail(this._outputFile, 200)),
        );
    }

    /** Idempotent: resolves at once when running; concurrent calls share one launch. */
    public async start(): Promise<void> {
        return this._starting.run(() => this.launch());
    }

    private environment(): NodeJS.ProcessEnv {
        const d = this.dir;
        const epmdPort = this._options.cluster?.epmdPort;
        // The private epmd (also read by rabbitmqctl); -start_epmd false: none started on that port when it is gone.
        const epmd = epmdPort === undefined ? '' : ' -start_epmd false';
        return {
            ...baseEnvironment(),
            HOME: d,
            RABBITMQ_NODENAME: this.nodeName,
            RABBITMQ_USE_LONGNAME: 'false',
            RABBITMQ_NODE_IP_ADDRESS: HOST,
            RABBITMQ_NODE_PORT: String(this._amqpPort),
            RABBITMQ_DIST_PORT: String(this._distPort),
            RABBITMQ_CONFIG_FILE: this.configFile,
            RABBITMQ_CONFIG_FILES: path.join(d, 'conf.d'),
            RABBITMQ_ADVANCED_CONFIG_FILE: path.join(d, 'advanced.config'),
            RABBITMQ_CONF_ENV_FILE: path.join(d, 'rabbitmq-env.conf'),
            RABBITMQ_ENABLED_PLUGINS_FILE: path.join(d, 'enabled_plugins'),
            RABBITMQ_MNESIA_BASE: path.join(d, 'mnesia'),
            RABBITMQ_LOG_BASE: path.join(d, 'log'),
            RABBITMQ_LOGS: this.logFile,
            RABBITMQ_PID_FILE: this._pidFile,
            RABBITMQ_FEATURE_FLAGS_FILE: path.join(d, 'feature_flags'),
            RABBITMQ_MOTD_FILE: path.join(d, 'motd'),
            // Distribution on 127.0.0.1 only; the marker names the node in `ps` (beam.smp's argv).
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS: `-kernel inet_dist_use_interface {127,0,0,1}${epmd} ${MARKER_ARG} ${this.nodeName}`,
            ...(epmdPort === undefined ? {} : { ERL_EPMD_PORT: String(epmdPort) }),
        };
    }

    private config(): string {
        const anonymous = !this._options.passwords;
        return [
            `listeners.tcp.default = ${HOST}:${this._amqpPort}`,
            `mqtt.listeners.tcp.default = ${HOST}:${this._port}`,
            // Users may log in from anywhere (guest included); the listeners are on 127.0.0.1 anyway.
            'loopback_users = none',
            `load_definitions = ${path.join(this.dir, 'definitions.json')}`,
            `mqtt.allow_anonymous = ${anonymous ? 'true' : 'false'}`,
            `mqtt.default_user = ${ANONYMOUS_USER}`,
            `mqtt.default_pass = ${ANONYMOUS_USER}`,
            'mqtt.vhost = /',
            'mqtt.exchange = amq.topic',
            'log.console = false',
            'log.file.level = info',
            ...(this._options.config ?? []),
            '',
        ].join('\n');
    }

    private async launch(): Promise<void> {
        await this._stopping.current;
        if (this._child) {
            return;
        }
        fs.writeFileSync(this.configFile, this.config());
        fs.rmSync(this._pidFile, { force: true });
        this._logOffset = fileSize(this.logFile);
        // A process group of its own (the script and beam.smp), killed as a whole.
        const child = spawnDetached(this._script, [], this.dir, this.environment(), this._outputFile);
        this._child = child;
        this._group = child.pid;
        this._beamPid = undefined;
        killOnExit(this);
        if (child.pid !== undefined) {
            this._watchdog = spawnWatchdog(process.pid, child.pid);
        }
        this._exited = new Promise<void>((resolve) => {
            const onExit = (): void => {
                if (this._child === child) {
                    this._child = undefined;
                }
                resolve();
            };
            child.once('exit', onExit);
            child.once('error', onExit);
        });
        // Referenced only while we wait on it, so a test that forgets to stop the node still lets
        // Node exit; the 'exit' hook then kills it.
        try {
            await this.waitReady(child, 'startup');
        } finally {
            child.unref();
        }
    }

    /** Polls until this start (log since _logOffset) is complete and MQTT logins are answered. */
    private async waitReady(child: ChildProcess, phase: string): Promise<void> {
        const deadline = Date.now() + READY_TIMEOUT_MS;
        for (;;) {
            if (this._child !== child) {
                await this.reapGroup();
                throw this.failure(`rabbitmq-server exited during ${phase} (code ${String(child.exitCode)})`);
            }
            this.readPidFile();
            // The log line proves this start booted completely (listeners included), the
            // CONNACK that MQTT logins are answered (and, refused, that anonymous ones are not).
            if (this.logSinceStart().includes('Server startup complete') && (await canConnect(this._port))) {
                const code = await connackCode(this.url);
                const wanted = this._options.passwords ? code !== undefined && REFUSED_LOGIN.has(code) : code === 0;
                if (wanted) {
                    return;
                }
            }
            if (Date.now() >= deadline) {
                await this.kill('SIGKILL');
                throw this.failure(`rabbitmq did not answer MQTT logins within ${READY_TIMEOUT_MS} ms (${phase})`);
            }
            await delay(POLL_MS);
        }
    }

    public async rabbitmqctl(...args: string[]): Promise<string> {
        const tool = path.join(path.dirname(this._script), 'rabbitmqctl');
        const { stdout } = await execFileAsync(tool, ['-q', '-n', this.nodeName, ...args], {
            cwd: this.dir,
            env: this.environment(), // HOME (the node's cookie) and no /etc/rabbitmq/rabbitmq-env.conf
            encoding: 'utf8',
            timeout: CTL_TIMEOUT_MS,
        });
        return stdout;
    }

    public async restartApp(): Promise<void> {
        if (this._starting.current || this._stopping.current) {
            throw new Error(`restartApp(): ${this.nodeName} is starting or stopping`);
        }
        const child = this._child;
        if (!child) {
            throw new Error(`restartApp(): ${this.nodeName} is not running`);
        }
        return this._starting.run(async () => {
            child.ref();
            try {
                await this.rabbitmqctl('stop_app');
                this._logOffset = fileSize(this.logFile);
                await this.rabbitmqctl('start_app');
                await this.waitReady(child, 'restartApp');
            } finally {
                child.unref();
            }
        });
    }

    private readPidFile(): void {
        if (this._beamPid !== undefined) {
            return;
        }
        try {
            const pid = Number(fs.readFileSync(this._pidFile, 'utf8').trim());
            if (Number.isInteger(pid) && pid > 0) {
                this._beamPid = pid;
            }
        } catch {
            // not written yet
        }
    }

    public async stop(): Promise<void> {
        return this._stopping.run(() => this.terminate());
    }

    public async restart(): Promise<void> {
        await this.stop();
        await this.start();
    }

    public async kill(sig: NodeJS.Signals = 'SIGKILL'): Promise<void> {
        const child = this._child;
        const group = this._group;
        if (!child || !this._exited || group === undefined) {
            return;
        }
        this.readPidFile();
        child.ref();
        try {
            signal(-group, sig);
            await this._exited;
            await this.reapGroup();
        } finally {
            child.unref();
        }
    }

    public async cleanup(): Promise<void> {
        try {
            await this.stop();
        } finally {
            // Anything of this node still running (it should not be): its VM names it in argv.
            for (const pid of processesWith([MARKER_ARG, this.nodeName])) {
                signal(pid, 'SIGKILL');
            }
            fs.rmSync(this.dir, { recursive: true, force: true });
        }
    }

    /** Synchronous, for the process 'exit' hook: SIGKILL the group, the VM and the watchdog. */
    public killNow(): void {
        if (this._group !== undefined) {
            signal(-this._group, 'SIGKILL');
        }
        if (this._beamPid !== undefined) {
            signal(this._beamPid, 'SIGKILL');
        }
        this._watchdog?.kill('SIGKILL');
    }

    /** SIGTERM to the start script: it passes it on to the VM (a graceful stop) and waits for it. */
    private async terminate(): Promise<void> {
        const child = this._child;
        const exited = this._exited;
        if (!child || !exited) {
            return;
        }
        this.readPidFile();
        child.ref();
        const force = setTimeout(() => {
            if (this._group !== undefined) {
                signal(-this._group, 'SIGKILL');
            }
        }, STOP_GRACE_MS);
        try {
            child.kill('SIGTERM');
            await exited;
            await this.reapGroup();
        } finally {
            clearTimeout(force);
            child.unref();
        }
    }

    /**
     * After the script exited: waits briefly for the VM (it exits with its script, or becomes an
     * orphan when the script was killed first), then SIGKILLs whatever is left of the group.
     */
    private async reapGroup(): Promise<void> {
        const beam = this._beamPid;
        const deadline = Date.now() + 2000;
        while (beam !== undefined && running(beam) && Date.now() < deadline) {
            await delay(20);
        }
        if (this._group !== undefined) {
            signal(-this._group, 'SIGKILL');
        }
        if (beam !== undefined && running(beam)) {
            signal(beam, 'SIGKILL');
            while (running(beam)) {
                await delay(20);
            }
        }
        this._watchdog?.kill('SIGKILL');
        this._watchdog = undefined;
        this._group = undefined;
        forgetOnExit(this);
    }

    /** The log written since the latest start() (the file is appended across restarts). */
    private logSinceStart(): string {
        return readFrom(this.logFile, this._logOffset);
    }

    private failure(message: string): Error {
        const log = this.logSinceStart().trimEnd().split('\n').slice(-40).join('\n');
        return startupFailure(
            `${message} (node ${this.nodeName}, MQTT port ${this._port}, AMQP port ${this._amqpPort}, ` +
                `distribution port ${this._distPort})`,
            [
                [this.configFile, tail(this.configFile, 50, '(none)')],
                [`${this.logFile} (tail)`, log || '(empty)'],
                ['stdout/stderr (tail)', tail(this._outputFile, 30, '(none)')],
            ],
        );
    }
}

/**
 * Spawns a private RabbitMQ node with the MQTT plugin on free 127.0.0.1 ports (MQTT, AMQP and
 * Erlang distribution), its configuration and data in a fresh temp folder, and resolves once an
 * MQTT login gets its CONNACK (accepted, or refused when `passwords` are given). A first boot
 * takes some 10-17 s. Throws, with the configuration and the log tail, when it does not start.
 */
export async function startRabbitMq(options: RabbitMqOptions = {}): Promise<RabbitMqBroker> {
    const script = rabbitmqServerScript();
    if (!script) {
        throw new Error('rabbitmq-server not found; install the Debian package rabbitmq-server');
    }
    if (options.passwords && Object.keys(options.passwords).length === 0) {
        throw new Error('options.passwords needs at least one user');
    }
    return startInTempFolder('pip-mqtt-rabbitmq-', (dir) => new RabbitMqProcess(dir, script, options));
}
