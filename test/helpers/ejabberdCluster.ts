// An ejabberd cluster for tests: three private ejabberd nodes (mod_mqtt, MQTT 5 and 3.1.1) on free
// 127.0.0.1 ports, joined into one Mnesia cluster, each with its own Erlang node name, config,
// Mnesia folder and log in a temp folder. Each node can be stopped, killed (SIGKILL) and started
// again on its ports and Mnesia folder, and then rejoins the cluster by itself.
//
// ejabberd is not installed system-wide (Debian's package starts a service whose default config
// listens on 1883, where the machine's Mosquitto is): scripts/fetch-ejabberd.sh unpacks Debian's
// ejabberd and the Erlang libraries it needs that are not installed into a folder (EJABBERD_ROOT,
// default ~/.cache/pip-mqtt-nodex/ejabberd), and each node is the installed `erl` running the
// `ejabberd` application from there (ERL_LIBS), with no start script in between: the spawned
// process is the Erlang VM itself.
//
// What is left alone on the machine: the nodes register with a PRIVATE epmd on a free port
// (ERL_EPMD_PORT), not the machine's epmd on 4369; Erlang distribution listens on 127.0.0.1 only,
// on a fixed free port per node; the only listener ejabberd opens is mod_mqtt's (no c2s, s2s or
// http listener is configured); nothing under /etc or /var is read or written.
//
// Facts that shape the tests (measured on ejabberd 23.01):
// - A session lives in one Erlang process on the node the client is connected to; only its record
//   and the subscription routes are in (RAM) Mnesia tables replicated to every node. When that
//   node dies the session is gone: a client that connects to another node with clean session off
//   gets sessionPresent false and has to subscribe again; what was published meanwhile is lost.
// - mod_mqtt of 23.01 accepts a CONNECT without a password only with a TLS client certificate, so
//   the nodes use anonymous authentication (any user name with a non-empty password) and `url`
//   carries the user name and password: `mqtt://pip-mqtt:anonymous@127.0.0.1:<port>`.
// - `$share/...` filters are refused without a SUBACK: MQTT 5 gets a DISCONNECT with reason code
//   0x9E (shared subscriptions not supported), MQTT 3.1.1 a closed connection; CONNACK (MQTT 5)
//   says `shared_subscription_available: false`.
// - A PUBLISH asks every node of the cluster for matching subscriptions (an rpc multicall), and the
//   session process of the publisher crashes when a node does not answer: when a node has just
//   died, and while a node starts and rejoins, clients publishing on the OTHER nodes are
//   disconnected (MQTT 5: DISCONNECT 0x83, "Internal server error"; 3.1.1: the connection closes).
//   Their unacknowledged QoS 1 publishes are not lost: a client that reconnects sends them again.
// - After every node was stopped, the node stopped last has to be started first (or all together):
//   Mnesia on any other node waits for it, so that node's start() resolves only once it runs.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import {
    connackCode,
    spawnDetached,
    fileSize,
    findExecutable,
    forgetOnExit,
    freePorts,
    killOnExit,
    readFrom,
    removeOnExit,
    SingleFlight,
    startOnFreePorts,
    startupFailure,
    tail,
} from './brokerProcess';
import { type ClusterNode, clusterRequired, type TestCluster } from './cluster';
import { canConnect, delay, HOST } from './net';

/** The MQTT user name in every node's url; with anonymous authentication any name would do. */
export const EJABBERD_MQTT_USER = 'pip-mqtt';
/** The MQTT password in every node's url: anonymous authentication takes any non-empty one. */
export const EJABBERD_MQTT_PASSWORD = 'anonymous';

/** The XMPP domain of every node (hosts:); MQTT clients become `<user>@localhost/<client id>`. */
const XMPP_HOST = 'localhost';
/** A fresh node is ready in ~1-2 s, a join takes ~0.3 s; this only guards against a hang. */
const READY_TIMEOUT_MS = 60_000;
/** A graceful stop (SIGTERM: the VM runs init:stop, ejabberd and Mnesia shut down) takes ~1 s. */
const STOP_GRACE_MS = 15_000;
/** How long the processes of a killed node (erl_child_setup and its ports) may take to go. */
const REAP_MS = 5_000;
const POLL_MS = 100;
/** One erl_call may take this long (it answers in milliseconds; a join takes ~0.3 s). */
const ERL_CALL_TIMEOUT_S = 20;
const CONNACK_TIMEOUT_MS = 3_000;
/** How many times the private epmd tries a new port when another process took the one picked. */
const EPMD_ATTEMPTS = 5;

// ---------------------------------------------------------------- finding ejabberd and Erlang

/** Where scripts/fetch-ejabberd.sh unpacks by default. */
function defaultRoot(): string {
    return path.join(os.homedir(), '.cache', 'pip-mqtt-nodex', 'ejabberd');
}

/** The unpacked ejabberd tree: env EJABBERD_ROOT (only that), else the default folder of scripts/fetch-ejabberd.sh. */
export function ejabberdRoot(): string {
    return process.env.EJABBERD_ROOT || defaultRoot();
}

/** What a node needs: the Erlang VM, erl_call, epmd, and the library folders of the unpacked tree. */
interface Installation {
    erl: string;
    erlCall: string;
    epmd: string;
    /** ERL_LIBS: the folder holding ejabberd-<version>/ and the one holding the other applications. */
    libs: string[];
}

/** The folders of `dir` whose name starts with `prefix` ([] when `dir` cannot be read). */
function entries(dir: string, prefix: string): string[] {
    try {
        return fs.readdirSync(dir).filter((name) => name.startsWith(prefix)).map((name) => path.join(dir, name));
    } catch {
        return [];
    }
}

/** The tools of the Erlang installation of `erl` on PATH: its erts-<version>/bin holds erl_call and epmd. */
function erlangTools(): { erl: string; erlCall?: string; epmd?: string } | string {
    const erl = findExecutable('erl', []);
    if (!erl) {
        return 'Erlang (erl) not found on PATH (Debian: erlang-base)';
    }
    // /usr/bin/erl -> /usr/lib/erlang/bin/erl: the Erlang root is two levels up.
    const root = path.dirname(path.dirname(fs.realpathSync(erl)));
    const bins = entries(root, 'erts-').map((dir) => path.join(dir, 'bin'));
    const find = (name: string): string | undefined => bins.map((dir) => path.join(dir, name)).find((file) => fs.existsSync(file));
    return { erl, erlCall: find('erl_call'), epmd: find('epmd') ?? findExecutable('epmd', []) };
}

/** The installation, or why there is none. */
function installation(): Installation | string {
    const root = ejabberdRoot();
    const fetch = `run scripts/fetch-ejabberd.sh${process.env.EJABBERD_ROOT ? '' : ', or set EJABBERD_ROOT'}`;
    if (!fs.existsSync(path.join(root, '.complete'))) {
        return `no unpacked ejabberd in ${root} (${fetch})`;
    }
    // Debian puts ejabberd in /usr/lib/<triplet>/ejabberd-<version>, its libraries in /usr/lib/erlang/lib.
    const app = entries(path.join(root, 'usr', 'lib'), '')
        .flatMap((dir) => entries(dir, 'ejabberd-'))
        .find((dir) => fs.existsSync(path.join(dir, 'ebin', 'ejabberd.app')));
    if (!app) {
        return `${root} has no usr/lib/*/ejabberd-*/ebin/ejabberd.app (${fetch})`;
    }
    const tools = erlangTools();
    if (typeof tools === 'string') {
        return tools;
    }
    if (!tools.erlCall || !tools.epmd) {
        return `the Erlang installation of ${tools.erl} has no ${tools.erlCall ? 'epmd' : 'erl_call'}`;
    }
    if (!fs.existsSync('/proc/self/stat')) {
        return 'no /proc: the helper tracks the processes of each node there';
    }
    return { erl: tools.erl, erlCall: tools.erlCall, epmd: tools.epmd, libs: [path.dirname(app), path.join(root, 'usr', 'lib', 'erlang', 'lib')] };
}

/**
 * For `describe(name, { skip: ejabberdClusterSkip() }, ...)`: a reason when the unpacked ejabberd
 * (scripts/fetch-ejabberd.sh), Erlang, erl_call or epmd is missing; `false` when all are there,
 * and always when clusterRequired('ejabberd') (then the suite runs and fails loudly).
 */
export function ejabberdClusterSkip(): string | false {
    if (clusterRequired('ejabberd')) {
        return false;
    }
    const found = installation();
    return typeof found === 'string' ? found : false;
}

// ---------------------------------------------------------------- processes

/** Whether a process runs; a zombie (exited, not reaped yet) does not. */
function running(pid: number): boolean {
    try {
        const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
        const state = stat.charAt(stat.lastIndexOf(')') + 2);
        return state !== 'Z' && state !== 'X';
    } catch {
        return false;
    }
}

function signal(pid: number, sig: NodeJS.Signals): void {
    try {
        process.kill(pid, sig);
    } catch {
        // already gone
    }
}

/**
 * The processes below `pid` (children, their children...), from /proc. The VM's erl_child_setup
 * (which forks the port programs) runs in a session of its own, so signalling the VM's process
 * group does not reach it: it is signalled by pid.
 */
function descendants(pid: number): number[] {
    const children = new Map<number, number[]>();
    for (const entry of fs.readdirSync('/proc')) {
        if (!/^\d+$/.test(entry)) continue;
        try {
            const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
            const parent = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
            children.set(parent, [...(children.get(parent) ?? []), Number(entry)]);
        } catch {
            // gone meanwhile
        }
    }
    const found: number[] = [];
    const queue = [pid];
    while (queue.length > 0) {
        for (const child of children.get(queue.shift() as number) ?? []) {
            found.push(child);
            queue.push(child);
        }
    }
    return found;
}

/** Waits until none of `pids` runs; after `graceMs` SIGKILLs those left and waits for them. */
async function reap(pids: number[], graceMs: number): Promise<void> {
    const deadline = Date.now() + graceMs;
    while (pids.some(running) && Date.now() < deadline) {
        await delay(20);
    }
    for (const pid of pids.filter(running)) {
        signal(pid, 'SIGKILL');
    }
    while (pids.some(running)) {
        await delay(20);
    }
}

/** The environment of Erlang processes: the test process's, minus Erlang and ejabberd settings of its own. */
function baseEnvironment(): NodeJS.ProcessEnv {
    const env: NodeJS.ProcessEnv = {};
    for (const [key, value] of Object.entries(process.env)) {
        if (!/^(ERL_|EJABBERD_|CONTRIB_MODULES_)/.test(key) && !['HOME', 'NOTIFY_SOCKET'].includes(key)) {
            env[key] = value;
        }
    }
    return env;
}

/**
 * Runs erl_call against the node listening for distribution on `distPort` (straight to that port,
 * no epmd), evaluating `expression`, and resolves with its output (`{ok, Term}` on success) and
 * exit code. HOME is the node's folder: erl_call reads the cookie from its .erlang.cookie.
 */
function erlCall(erlCallPath: string, home: string, distPort: number, expression: string): Promise<{ code: number | null; output: string }> {
    return new Promise((resolve) => {
        const child = spawn(erlCallPath, ['-r', '-address', `${HOST}:${distPort}`, '-timeout', String(ERL_CALL_TIMEOUT_S), '-e'], {
            env: { ...baseEnvironment(), HOME: home },
            stdio: ['pipe', 'pipe', 'pipe'],
        });
        let output = '';
        child.stdout.on('data', (d: Buffer) => { output += d.toString(); });
        child.stderr.on('data', (d: Buffer) => { output += d.toString(); });
        const timer = setTimeout(() => child.kill('SIGKILL'), (ERL_CALL_TIMEOUT_S + 5) * 1000);
        child.once('error', (err) => { clearTimeout(timer); resolve({ code: null, output: err.message }); });
        child.once('close', (code) => { clearTimeout(timer); resolve({ code, output: output.trim() }); });
        child.stdin.on('error', () => undefined);
        // erl_call parses the input as forms ending with ".\n".
        child.stdin.end(`${expression}\n`);
    });
}

// ---------------------------------------------------------------- epmd

/**
 * The cluster's own epmd, in the foreground on a free 127.0.0.1 port, in a process group of its
 * own together with a watchdog shell that kills it once the test process is gone (a test process
 * killed by a signal runs no 'exit' hook).
 */
class PrivateEpmd {
    public port = 0;
    private _child?: ChildProcess;
    private _exited?: Promise<void>;
    private readonly _logFile: string;

    public constructor(private readonly _epmd: string, dir: string) {
        this._logFile = path.join(dir, 'epmd.log');
    }

    /** The watchdog shell's pid (epmd is its child) while it runs. */
    public get pid(): number | undefined {
        return this._child?.pid;
    }

    /** Starts epmd on a free port; resolves once it accepts connections. */
    public async start(): Promise<void> {
        for (let attempt = 1; ; attempt++) {
            [this.port] = await freePorts(1);
            if (await this.tryStart()) {
                return;
            }
            if (attempt >= EPMD_ATTEMPTS) {
                throw startupFailure(`the private epmd did not start on ${HOST}:${this.port}`, [[this._logFile, tail(this._logFile)]]);
            }
        }
    }

    private async tryStart(): Promise<boolean> {
        const owner = process.pid;
        // epmd runs as a background job of the shell, which then waits for either to end.
        const script =
            `"$0" -port ${this.port} -address ${HOST} & epmd=$!; ` +
            `while kill -0 ${owner} 2>/dev/null && kill -0 $epmd 2>/dev/null; do sleep 1; done; ` +
            'kill -KILL $epmd 2>/dev/null; exit 0';
        const output = fs.openSync(this._logFile, 'a');
        let child: ChildProcess;
        try {
            child = spawn('/bin/sh', ['-c', script, this._epmd], { detached: true, stdio: ['ignore', output, output] });
        } finally {
            fs.closeSync(output);
        }
        this._child = child;
        killOnExit(this);
        let exited = false;
        this._exited = new Promise<void>((resolve) => {
            const gone = (): void => {
                exited = true;
                resolve();
            };
            child.once('exit', gone);
            child.once('error', gone);
        });
        child.unref();
        // epmd exits at once when its port is taken, and the shell after it.
        const deadline = Date.now() + 10_000;
        while (!exited && Date.now() < deadline) {
            if (child.pid !== undefined && descendants(child.pid).length > 0 && (await canConnect(this.port))) {
                return true;
            }
            await delay(50);
        }
        await this.stop();
        return false;
    }

    /** Stops the shell and epmd (SIGKILL to their process group) and waits until both are gone. */
    public async stop(): Promise<void> {
        const child = this._child;
        if (!child || child.pid === undefined) {
            return;
        }
        const pids = [child.pid, ...descendants(child.pid)];
        child.ref();
        try {
            signal(-child.pid, 'SIGKILL');
            await this._exited;
            await reap(pids, REAP_MS);
        } finally {
            child.unref();
        }
        this._child = undefined;
        forgetOnExit(this);
    }

    /** Synchronous, for the process 'exit' hook. */
    public killNow(): void {
        if (this._child?.pid !== undefined) {
            signal(-this._child.pid, 'SIGKILL');
        }
    }
}

// ---------------------------------------------------------------- a node

/** One node of an ejabberd cluster. */
export interface EjabberdNode extends ClusterNode {
    /** The Erlang node name: `pip-mqtt-<hex>-<n>@localhost`. */
    readonly nodeName: string;
    /** The node's folder: ejabberd.yml, .erlang.cookie, mnesia/, ejabberd.log, stdout.log. */
    readonly dir: string;
    /** ejabberd's log (appended across restarts). */
    readonly logFile: string;
    /** The MQTT port (the same across restarts). */
    readonly port: number;
    /** The Erlang distribution port (the same across restarts). */
    readonly distPort: number;
    /** The Erlang VM's pid while it runs. */
    readonly pid: number | undefined;
    /** The Erlang node names this node's Mnesia sees running (itself included), sorted; [] when it does not answer. */
    runningNodes(): Promise<string[]>;
}

/** What a node needs of its cluster. */
interface NodeContext {
    readonly install: Installation;
    readonly cookie: string;
    readonly epmdPort: () => number;
    /** The node names a node starting now must see running: every node that is up, and itself. */
    readonly expectedNodes: (self: EjabberdNodeProcess) => string[];
}

class EjabberdNodeProcess implements EjabberdNode {
    public readonly name: string;
    public readonly nodeName: string;
    public readonly logFile: string;
    private readonly _configFile: string;
    private readonly _outputFile: string;
    private _port = 0;
    private _distPort = 0;
    private _logOffset = 0;
    private _child?: ChildProcess;
    private _exited?: Promise<void>;
    /** The VM's child processes (erl_child_setup and its port programs), as last seen. */
    private _helpers: number[] = [];
    /** True from the end of a successful start until the node stops or dies. */
    private _up = false;
    private readonly _starting = new SingleFlight();
    private readonly _stopping = new SingleFlight();

    public constructor(
        public readonly dir: string,
        index: number,
        clusterId: string,
        private readonly _context: NodeContext,
    ) {
        this.name = `ejabberd-${index}`;
        this.nodeName = `pip-mqtt-${clusterId}-${index}@${XMPP_HOST}`;
        this.logFile = path.join(dir, 'ejabberd.log');
        this._configFile = path.join(dir, 'ejabberd.yml');
        this._outputFile = path.join(dir, 'stdout.log');
        fs.mkdirSync(path.join(dir, 'mnesia'), { recursive: true });
        // The cookie of the node and of erl_call (HOME is this folder): owner-only, as Erlang requires.
        fs.writeFileSync(path.join(dir, '.erlang.cookie'), _context.cookie, { mode: 0o400 });
    }

    public get port(): number {
        return this._port;
    }

    public get distPort(): number {
        return this._distPort;
    }

    public get url(): string {
        return `mqtt://${EJABBERD_MQTT_USER}:${EJABBERD_MQTT_PASSWORD}@${HOST}:${this._port}`;
    }

    public get pid(): number | undefined {
        return this._child?.pid;
    }

    public get up(): boolean {
        return this._up;
    }

    /** The first start, on free ports (new ones when another process took one first). */
    public async startOnFreePorts(): Promise<void> {
        await startOnFreePorts(
            async () => {
                [this._port, this._distPort] = await freePorts(2);
            },
            () => this.start(),
            // A taken MQTT port: ejabberd logs eaddrinuse; a taken distribution port: the VM prints
            // "Protocol 'inet_tcp': register/listen error: eaddrinuse".
            () => /eaddrinuse|address already in use/i.test(this.logSinceStart() + tail(this._outputFile, 100)),
        );
    }

    public async start(): Promise<void> {
        return this._starting.run(() => this.launch());
    }

    public async stop(): Promise<void> {
        return this._stopping.run(() => this.terminate());
    }

    public async kill(sig: NodeJS.Signals = 'SIGKILL'): Promise<void> {
        const child = this._child;
        if (!child || child.pid === undefined || !this._exited) {
            return;
        }
        this._up = false;
        const helpers = this.refreshHelpers();
        child.ref();
        try {
            signal(-child.pid, sig);
            if (sig === 'SIGKILL') {
                helpers.forEach((pid) => signal(pid, 'SIGKILL'));
            }
            await this._exited;
            // After the VM: erl_child_setup and the port programs end when their pipes close.
            await reap(helpers, REAP_MS);
        } finally {
            child.unref();
        }
    }

    /** Joins the cluster of `seed` (the first start of every node but the first). */
    public async join(seed: EjabberdNodeProcess): Promise<void> {
        const { code, output } = await this.erl(`ejabberd_admin:join_cluster(<<"${seed.nodeName}">>).`);
        if (code !== 0 || output !== '{ok, ok}') {
            throw this.failure(`${this.nodeName} could not join ${seed.nodeName}: ${output || `erl_call exit code ${String(code)}`}`);
        }
    }

    public async runningNodes(): Promise<string[]> {
        if (!this._child) {
            return [];
        }
        const status = await this.status();
        return status === 'starting' ? [] : status;
    }

    /** Waits until the node sees every expected node running and answers an MQTT CONNECT with CONNACK 0. */
    public async waitReady(phase: string): Promise<void> {
        const child = this._child;
        const deadline = Date.now() + READY_TIMEOUT_MS;
        let last = 'no answer yet';
        for (;;) {
            if (!child || this._child !== child) {
                throw this.failure(`${this.nodeName} exited during ${phase} (code ${String(child?.exitCode)})`);
            }
            const expected = this._context.expectedNodes(this);
            const status = await this.status();
            if (status === 'starting') {
                last = 'ejabberd is not started';
            } else if (!expected.every((node) => status.includes(node))) {
                last = `running nodes ${status.join(', ') || '(none)'}, expected ${expected.join(', ')}`;
            } else {
                const code = await connackCode(`mqtt://${HOST}:${this._port}`,
                    { username: EJABBERD_MQTT_USER, password: EJABBERD_MQTT_PASSWORD, connectTimeout: CONNACK_TIMEOUT_MS });
                if (code === 0) {
                    this.refreshHelpers();
                    return;
                }
                last = `CONNACK ${String(code ?? 'none')}`;
            }
            if (Date.now() >= deadline) {
                await this.kill('SIGKILL');
                throw this.failure(`${this.nodeName} was not ready within ${READY_TIMEOUT_MS} ms (${phase}; last: ${last})`);
            }
            await delay(POLL_MS);
        }
    }

    /** Synchronous, for the process 'exit' hook: SIGKILL the VM's group and its helpers. */
    public killNow(): void {
        const pid = this._child?.pid;
        if (pid !== undefined) {
            const helpers = running(pid) ? descendants(pid) : this._helpers;
            signal(-pid, 'SIGKILL');
            helpers.forEach((helper) => signal(helper, 'SIGKILL'));
        }
    }

    private erl(expression: string): Promise<{ code: number | null; output: string }> {
        return erlCall(this._context.install.erlCall, this.dir, this._distPort, expression);
    }

    /** `starting` until the ejabberd application runs, then the Mnesia nodes running as this node sees them. */
    private async status(): Promise<'starting' | string[]> {
        const { code, output } = await this.erl(
            'try lists:keymember(ejabberd, 1, application:which_applications(2000)) of ' +
                'true -> {started, lists:sort(mnesia:system_info(running_db_nodes))}; false -> starting ' +
                'catch _:_ -> starting end.',
        );
        if (code !== 0 || !output.startsWith('{ok, {started,')) {
            return 'starting';
        }
        return [...output.matchAll(/'?([\w.-]+@[\w.-]+)'?/g)].map((match) => match[1]);
    }

    private refreshHelpers(): number[] {
        const pid = this._child?.pid;
        if (pid !== undefined && running(pid)) {
            this._helpers = descendants(pid);
        }
        return this._helpers;
    }

    private config(): string {
        return [
            '# Written by test/helpers/ejabberdCluster.ts at every start: one mod_mqtt listener, nothing else.',
            'hosts:',
            `  - ${XMPP_HOST}`,
            'loglevel: info',
            // mod_mqtt takes a CONNECT without a password only with a TLS client certificate:
            // anonymous login takes any user name with any non-empty password.
            'auth_method: [anonymous]',
            'anonymous_protocol: login_anon',
            'allow_multiple_connections: true',
            // No certificates are requested (ACME would look for an http listener).
            'acme:',
            '  auto: false',
            'listen:',
            '  -',
            `    port: ${this._port}`,
            `    ip: "${HOST}"`,
            '    module: mod_mqtt',
            'modules:',
            '  mod_mqtt: {}',
            '',
        ].join('\n');
    }

    /** The VM's arguments; the node halts itself when the test process is gone (checked every second). */
    private args(): string[] {
        const watch = `/proc/${process.pid}`;
        const guard =
            'spawn(fun() -> Watch = fun W() -> receive after 1000 -> ok end, ' +
            `case file:read_file_info("${watch}") of {ok, _} -> W(); _ -> erlang:halt(1) end end, Watch() end)`;
        return [
            '-sname', this.nodeName,
            '-noinput',
            // The private epmd runs already (ERL_EPMD_PORT): never start one.
            '-start_epmd', 'false',
            '-kernel', 'inet_dist_use_interface', '{127,0,0,1}',
            'inet_dist_listen_min', String(this._distPort), 'inet_dist_listen_max', String(this._distPort),
            '-mnesia', 'dir', JSON.stringify(path.join(this.dir, 'mnesia')),
            '-eval', guard,
            '-s', 'ejabberd',
        ];
    }

    private environment(): NodeJS.ProcessEnv {
        return {
            ...baseEnvironment(),
            HOME: this.dir,
            ERL_LIBS: this._context.install.libs.join(path.delimiter),
            ERL_EPMD_PORT: String(this._context.epmdPort()),
            ERL_CRASH_DUMP: path.join(this.dir, 'erl_crash.dump'),
            EJABBERD_CONFIG_PATH: this._configFile,
            EJABBERD_LOG_PATH: this.logFile,
        };
    }

    private async launch(): Promise<void> {
        await this._stopping.current;
        if (this._child) {
            return;
        }
        fs.writeFileSync(this._configFile, this.config());
        this._logOffset = fileSize(this.logFile);
        // erl execs erlexec, which execs beam.smp: the child is the VM, in a process group of its own.
        const child = spawnDetached(this._context.install.erl, this.args(), this.dir, this.environment(), this._outputFile);
        this._child = child;
        this._helpers = [];
        killOnExit(this);
        this._exited = new Promise<void>((resolve) => {
            const gone = (): void => {
                if (this._child === child) {
                    this._child = undefined;
                    this._up = false;
                    forgetOnExit(this);
                }
                resolve();
            };
            child.once('exit', gone);
            child.once('error', gone);
        });
        // Referenced only while a call waits on it, so a test that forgets to stop still lets Node exit.
        try {
            await this.waitReady('startup');
            this._up = true;
        } catch (err) {
            await this.kill('SIGKILL');
            throw err;
        } finally {
            child.unref();
        }
    }

    private async terminate(): Promise<void> {
        const child = this._child;
        if (!child || child.pid === undefined || !this._exited) {
            return;
        }
        this._up = false;
        const helpers = this.refreshHelpers();
        child.ref();
        // SIGTERM: the VM stops its applications (ejabberd, Mnesia) and exits; SIGKILL after the grace period.
        const force = setTimeout(() => {
            signal(-(child.pid as number), 'SIGKILL');
            helpers.forEach((pid) => signal(pid, 'SIGKILL'));
        }, STOP_GRACE_MS);
        try {
            signal(child.pid, 'SIGTERM');
            await this._exited;
            await reap(helpers, REAP_MS);
        } finally {
            clearTimeout(force);
            child.unref();
        }
    }

    private logSinceStart(): string {
        return readFrom(this.logFile, this._logOffset);
    }

    private failure(message: string): Error {
        const log = this.logSinceStart().trimEnd().split('\n').slice(-30).join('\n');
        return startupFailure(`${message} (MQTT port ${this._port}, distribution port ${this._distPort}, epmd port ${this._context.epmdPort()})`, [
            [this._configFile, tail(this._configFile, 40, '(none)')],
            [`${this.logFile} (tail)`, log || '(empty)'],
            ['stdout/stderr (tail)', tail(this._outputFile, 30, '(none)')],
        ]);
    }
}

// ---------------------------------------------------------------- the cluster

/** A running ejabberd cluster. */
export interface EjabberdCluster extends TestCluster {
    readonly kind: 'ejabberd';
    readonly nodes: readonly EjabberdNode[];
    /** The temp folder: epmd.log and one folder per node. */
    readonly dir: string;
    /** The private epmd's port (ERL_EPMD_PORT of every node). */
    readonly epmdPort: number;
    /** The pid of the private epmd's watchdog shell (epmd is its child) while it runs. */
    readonly epmdPid: number | undefined;
}

/** What `settings` says: the configuration every node gets, in one line. */
const SETTINGS =
    'ejabberd 23.01 (Debian, unpacked), 3 nodes in one Mnesia cluster (join_cluster), mod_mqtt with defaults ' +
    '(session_expiry 5 min, queue_type ram, max_queue 5000), anonymous login (any user name, non-empty password); ' +
    'a session lives only on the node its client is connected to: after that node is lost, the client resubscribes';

/**
 * Starts a cluster of `size` nodes (default 3): the private epmd, then every node, then nodes 2..n
 * join node 1 one after the other. Resolves once each node sees all nodes running and answers an
 * MQTT CONNECT with CONNACK 0. Throws, with config and log tails, when a node does not come up
 * (everything started is stopped and the folder removed).
 */
export async function startEjabberdCluster(size = 3): Promise<EjabberdCluster> {
    const install = installation();
    if (typeof install === 'string') {
        throw new Error(install);
    }
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pip-mqtt-ejabberd-'));
    removeOnExit(dir);
    const epmd = new PrivateEpmd(install.epmd, dir);
    const clusterId = randomBytes(4).toString('hex');
    let joined = false;
    const nodes: EjabberdNodeProcess[] = [];
    const context: NodeContext = {
        install,
        cookie: randomBytes(15).toString('hex').toUpperCase(),
        epmdPort: () => epmd.port,
        // Before the join each node stands alone; after it, a node starting must see every node that is up.
        expectedNodes: (self) =>
            joined ? nodes.filter((node) => node === self || node.up).map((node) => node.nodeName).sort() : [self.nodeName],
    };
    for (let i = 1; i <= size; i++) {
        nodes.push(new EjabberdNodeProcess(path.join(dir, `node-${i}`), i, clusterId, context));
    }
    const stop = async (): Promise<void> => {
        try {
            await Promise.all(nodes.map((node) => node.stop()));
        } finally {
            await epmd.stop();
            fs.rmSync(dir, { recursive: true, force: true });
        }
    };
    try {
        await epmd.start();
        const started = await Promise.allSettled(nodes.map((node) => node.startOnFreePorts()));
        const failed = started.find((result): result is PromiseRejectedResult => result.status === 'rejected');
        if (failed) {
            throw failed.reason;
        }
        // Mnesia schema changes one at a time: each join copies the schema from node 1.
        for (const node of nodes.slice(1)) {
            await node.join(nodes[0]);
        }
        joined = true;
        await Promise.all(nodes.map((node) => node.waitReady('join')));
    } catch (err) {
        await stop();
        throw err;
    }
    return {
        kind: 'ejabberd',
        nodes,
        keepsSessions: false,
        // Seen once in the queue scenario: 10 numbers (one publisher window) acknowledged just before the publisher's
        // session was dropped at the killed node's rejoin, never delivered, none of them acknowledged by the consumer.
        losesAtPublisherLoss: 'ejabberd 23.01 drops the sessions of publishers on other nodes while a node leaves or rejoins the cluster ' +
            '(DISCONNECT 0x83 with MQTT 5), and some QoS 1 messages it had just acknowledged to them are not delivered',
        settings: SETTINGS,
        dir,
        get epmdPort() {
            return epmd.port;
        },
        get epmdPid() {
            return epmd.pid;
        },
        stop,
    };
}
