// `npm run bench`: starts its own brokers, runs each scenario's variants in fresh processes,
// alternating them (A B A B ...), and prints medians with the ratio to raw MQTT.js.
//
// Options (after `npm run bench --`):
//   --scenario <regex>   cases whose "scenario label" matches, e.g. throughput, 'queue.*envelope', dispatch
//   --messages <n>       messages per run of scenarios 1 and 4 (default 100000); scenario 2 sends a
//                        fifth of them, scenario 5 a tenth (at most 10000, at 1000 msg/s)
//   --payload <bytes>    one payload size instead of 64 and 4096
//   --broker <name>      all (default), aedes or mosquitto; MQTT_URI=... uses that broker instead
//   --rounds <n>         runs per variant (default 3); the tables show medians
//   --unpinned           do not pin brokers and workers to CPUs
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';

import { mosquittoAvailable, startMosquitto } from '../test/helpers/mosquitto';
import { dispatchChart, type ChartLine } from './chart';
import type { RunResult, WorkerTask } from './worker';

interface BenchBroker {
    readonly name: string;
    readonly url: string;
    stop(): Promise<void>;
}

/**
 * Where processes run. With two CPUs or more and `taskset` (util-linux), the brokers get CPU 1
 * and every measured worker CPU 0, so a broker and the client it serves never take turns on one
 * CPU and the scheduler does not move them around: runs vary much less. `--unpinned` turns it off.
 */
interface Pinning {
    /** The command and arguments that start `argv` on the workers' CPU. */
    worker(argv: string[]): [string, string[]];
    broker(argv: string[]): [string, string[]];
    /** Moves a running broker process to the brokers' CPU. */
    pinBroker(pid: number | undefined): void;
    readonly description: string;
}

function pinning(wanted: boolean): Pinning {
    let taskset = false;
    if (wanted && os.cpus().length >= 2) {
        try {
            execFileSync('taskset', ['-c', '0', 'true'], { stdio: 'ignore' });
            taskset = true;
        } catch {
            taskset = false;
        }
    }
    if (!taskset) {
        return {
            worker: (argv) => [argv[0], argv.slice(1)],
            broker: (argv) => [argv[0], argv.slice(1)],
            pinBroker: () => undefined,
            description: 'not pinned',
        };
    }
    return {
        worker: (argv) => ['taskset', ['-c', '0', ...argv]],
        broker: (argv) => ['taskset', ['-c', '1', ...argv]],
        pinBroker: (pid) => {
            if (pid !== undefined) execFileSync('taskset', ['-p', '-c', '1', String(pid)], { stdio: 'ignore' });
        },
        description: 'workers on CPU 0, brokers on CPU 1',
    };
}

/** The embedded Aedes broker, in a process of its own. */
async function startAedesProcess(pin: Pinning): Promise<BenchBroker> {
    const [command, args] = pin.broker([process.execPath, path.join(__dirname, 'brokerProcess.js')]);
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    const port = await new Promise<number>((resolve, reject) => {
        let out = '';
        child.stdout.on('data', (chunk: Buffer) => {
            out += chunk.toString();
            const match = /READY (\d+)/.exec(out);
            if (match) resolve(Number(match[1]));
        });
        child.once('exit', (code) => reject(new Error(`the Aedes broker process exited (${code})`)));
    });
    return {
        name: 'aedes',
        url: `mqtt://127.0.0.1:${port}`,
        stop: () => new Promise<void>((resolve) => {
            child.once('exit', () => resolve());
            child.kill('SIGTERM');
        }),
    };
}

async function startBrokers(which: string, pin: Pinning): Promise<BenchBroker[]> {
    if (process.env.MQTT_URI) return [{ name: 'MQTT_URI', url: process.env.MQTT_URI, stop: () => Promise.resolve() }];
    const brokers: BenchBroker[] = [];
    if (which === 'all' || which === 'aedes') brokers.push(await startAedesProcess(pin));
    if ((which === 'all' && mosquittoAvailable()) || which === 'mosquitto') {
        const mosquitto = await startMosquitto();
        pin.pinBroker(mosquitto.pid);
        brokers.push({ name: 'mosquitto', url: mosquitto.url, stop: () => mosquitto.cleanup() });
    }
    return brokers;
}

/** Runs one task in a fresh worker process. */
function runWorker(task: WorkerTask, pin: Pinning): Promise<RunResult> {
    return new Promise((resolve, reject) => {
        const [command, args] = pin.worker([process.execPath, '--expose-gc', path.join(__dirname, 'worker.js'), JSON.stringify(task)]);
        const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
        let out = '';
        let err = '';
        child.stdout.on('data', (chunk: Buffer) => { out += chunk.toString(); });
        child.stderr.on('data', (chunk: Buffer) => { err += chunk.toString(); });
        child.once('exit', (code) => {
            const line = out.split('\n').find((l) => l.startsWith('RESULT '));
            if (code === 0 && line) resolve(JSON.parse(line.substring(7)) as RunResult);
            else reject(new Error(`worker ${task.scenario}/${task.variant} failed (exit ${code}): ${err.trim() || out.trim()}`));
        });
    });
}

function median(values: number[]): number {
    const sorted = [...values].sort((a, b) => a - b);
    const mid = Math.floor(sorted.length / 2);
    return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** One compared case: the same work for each variant. */
interface BenchCase {
    readonly scenario: string;
    readonly label: string;
    readonly broker: BenchBroker;
    readonly variants: readonly string[];
    readonly params: object;
}

interface CaseResult {
    readonly scenario: string;
    readonly label: string;
    readonly broker: string;
    readonly runs: Record<string, RunResult[]>;
    /** The median of each metric, by variant. */
    readonly medians: Record<string, Record<string, number | null>>;
}

/** The medians of every metric the runs report. */
function medians(runs: RunResult[]): Record<string, number | null> {
    const result: Record<string, number | null> = {};
    for (const key of Object.keys(runs[0] ?? {})) {
        const values = runs.map((r) => r[key]).filter((v): v is number => typeof v === 'number');
        result[key] = values.length > 0 ? median(values) : null;
    }
    return result;
}

/** Every case of every scenario, on every broker, that the filter lets through. */
function benchCases(brokers: BenchBroker[], options: { messages: number; payloads: number[]; filter: RegExp }): BenchCase[] {
    const cases: BenchCase[] = [];
    const add = (c: BenchCase): void => {
        if (options.filter.test(`${c.scenario} ${c.label}`)) cases.push(c);
    };
    for (const broker of brokers) {
        for (const qos of [0, 1] as const) {
            for (const payload of options.payloads) {
                // 500 messages in flight end to end: enough to keep both clients and the broker busy,
                // few enough that no backlog builds up anywhere (see throughput.ts).
                add({ scenario: 'throughput', label: `QoS ${qos}, ${payload} B`, broker, variants: ['raw', 'ours'],
                    params: { url: broker.url, messages: options.messages, payload, qos, window: 500 } });
            }
        }
        for (const serializeEnvelope of [false, true]) {
            for (const payload of options.payloads) {
                // The predecessor sends a raw body JSON-encoded ({"type":"Buffer","data":[...]}): in raw mode it delivers no body intact.
                const variants = serializeEnvelope ? ['raw', 'ours', 'predecessor'] : ['raw', 'ours'];
                add({ scenario: 'queue', label: `${serializeEnvelope ? 'envelope' : 'raw'}, ${payload} B`, broker, variants,
                    params: { url: broker.url, messages: options.messages, payload, serializeEnvelope, window: 100 } });
            }
        }
        add({ scenario: 'latency', label: 'QoS 1, 1000 msg/s, 64 B', broker, variants: ['raw', 'ours'],
            params: { url: broker.url, messages: Math.max(1000, Math.min(Math.round(options.messages / 10), 10_000)), rate: 1000, payload: 64 } });
        for (const subscriptions of [1, 100, 10_000, 100_000]) {
            add({ scenario: 'dispatch', label: `${subscriptions} subscriptions`, broker, variants: ['raw', 'ours', 'predecessor'],
                params: { url: broker.url, subscriptions, messages: Math.max(1000, Math.round(options.messages / 5)), payload: 64 } });
        }
    }
    return cases;
}

const fmt = (value: number | null | undefined, digits = 0): string => (value == null ? '-' : value.toFixed(digits));

function printTables(results: CaseResult[]): void {
    const throughput = results.filter((r) => r.scenario === 'throughput');
    if (throughput.length > 0) {
        console.log('\nScenario 1: publish -> receive throughput (messages/s, medians)\n');
        console.log('| Broker | Case | raw MQTT.js | ours | ours / raw | CPU µs/msg raw / ours |');
        console.log('| --- | --- | --- | --- | --- | --- |');
        for (const r of throughput) {
            const raw = r.medians.raw;
            const ours = r.medians.ours;
            console.log(`| ${r.broker} | ${r.label} | ${fmt(raw.rate)} | ${fmt(ours.rate)} | ${fmt((ours.rate ?? 0) / (raw.rate ?? 1), 2)}x | ` +
                `${fmt(raw.cpuPerMessageUs, 1)} / ${fmt(ours.cpuPerMessageUs, 1)} |`);
        }
    }
    const queue = results.filter((r) => r.scenario === 'queue');
    if (queue.length > 0) {
        console.log('\nScenario 4: MqttMessageQueue send -> receive, QoS 1 (messages/s, medians)\n');
        console.log('| Broker | Case | raw MQTT.js | ours | predecessor | ours / raw | ours / predecessor | CPU µs/msg raw / ours / pred. |');
        console.log('| --- | --- | --- | --- | --- | --- | --- | --- |');
        for (const r of queue) {
            const { raw, ours, predecessor: pred } = r.medians;
            console.log(`| ${r.broker} | ${r.label} | ${fmt(raw.rate)} | ${fmt(ours.rate)} | ${fmt(pred?.rate)} | ` +
                `${fmt((ours.rate ?? 0) / (raw.rate ?? 1), 2)}x | ${pred?.rate ? fmt((ours.rate ?? 0) / pred.rate, 2) : '-'}x | ` +
                `${[raw, ours, pred].map((m) => fmt(m?.cpuPerMessageUs, 1)).join(' / ')} |`);
        }
    }
    const latency = results.filter((r) => r.scenario === 'latency');
    if (latency.length > 0) {
        console.log('\nScenario 5: round-trip latency at a fixed rate (ms, medians of the runs)\n');
        console.log('| Broker | Case | p50 raw / ours | p99 raw / ours | max raw / ours | CPU µs/msg raw / ours |');
        console.log('| --- | --- | --- | --- | --- | --- |');
        for (const r of latency) {
            const two = (key: string, digits: number): string => [r.medians.raw, r.medians.ours].map((m) => fmt(m?.[key], digits)).join(' / ');
            console.log(`| ${r.broker} | ${r.label} | ${two('p50Ms', 2)} | ${two('p99Ms', 2)} | ${two('maxMs', 1)} | ${two('cpuPerMessageUs', 1)} |`);
        }
    }
    const dispatch = results.filter((r) => r.scenario === 'dispatch');
    if (dispatch.length > 0) {
        console.log('\nScenarios 2 and 3: S subscriptions on one connection, messages matching one (medians)\n');
        console.log('| Broker | Case | raw msg/s | ours msg/s | predecessor msg/s | ours / raw | ours / ours at 1 | ours / predecessor | ' +
            'CPU µs/msg raw / ours / pred. | subscribe s raw / ours / pred. | heap B/sub raw / ours / pred. |');
        console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
        for (const r of dispatch) {
            const { raw, ours, predecessor: pred } = r.medians;
            const one = dispatch.find((d) => d.broker === r.broker && d.label === '1 subscriptions')?.medians.ours.rate;
            const three = (key: string, digits: number): string => [raw, ours, pred].map((m) => fmt(m?.[key], digits)).join(' / ');
            console.log(`| ${r.broker} | ${r.label} | ${fmt(raw.rate)} | ${fmt(ours.rate)} | ${fmt(pred?.rate)} | ` +
                `${fmt((ours.rate ?? 0) / (raw.rate ?? 1), 2)}x | ${one ? fmt((ours.rate ?? 0) / one, 2) : '-'}x | ` +
                `${pred?.rate ? fmt((ours.rate ?? 0) / pred.rate, 1) : '-'}x | ${three('cpuPerMessageUs', 1)} | ${three('subscribeSeconds', 2)} | ` +
                `${three('heapPerSubscription', 0)} |`);
        }
    }
}

/** The progress line: rewritten in place on a terminal, one line per step otherwise (CI logs). */
function progress(text: string): void {
    if (process.stderr.isTTY) process.stderr.write(`\r${text.padEnd(process.stderr.columns - 1)}`);
    else process.stderr.write(`${text}\n`);
}

async function main(): Promise<void> {
    const { values } = parseArgs({
        options: {
            scenario: { type: 'string', default: '' },
            messages: { type: 'string', default: '100000' },
            payload: { type: 'string', default: '' },
            broker: { type: 'string', default: 'all' },
            rounds: { type: 'string', default: '3' },
            unpinned: { type: 'boolean', default: false },
        },
    });
    const messages = Number(values.messages);
    const rounds = Number(values.rounds);
    if (!(messages > 0) || !(rounds > 0)) throw new Error('--messages and --rounds must be positive numbers');
    const payloads = values.payload ? [Number(values.payload)] : [64, 4096];

    const pin = pinning(values.unpinned !== true);
    progress(`CPUs: ${pin.description}`);
    const brokers = await startBrokers(values.broker ?? 'all', pin);
    const cases = benchCases(brokers, { messages, payloads, filter: new RegExp(values.scenario ?? '', 'i') });
    const results: CaseResult[] = [];
    const failures: string[] = [];
    const total = cases.reduce((n, c) => n + c.variants.length * rounds, 0);
    let done = 0;
    try {
        for (const c of cases) {
            const runs: Record<string, RunResult[]> = Object.fromEntries(c.variants.map((v) => [v, []]));
            for (let round = 0; round < rounds; round++) {
                // A B, then B A: no variant always goes first.
                const order = round % 2 === 0 ? c.variants : [...c.variants].reverse();
                for (const variant of order) {
                    progress(`[${++done}/${total}] ${c.scenario} ${c.label} on ${c.broker.name}: ${variant} (round ${round + 1})`);
                    try {
                        runs[variant].push(await runWorker({ scenario: c.scenario, variant, params: c.params }, pin));
                    } catch (err) {
                        // A failed run (a lost message, a timeout) is reported and the others go on.
                        const message = (err as Error).message.split('\n').find((l) => /Error:/.test(l)) ?? (err as Error).message;
                        failures.push(`${c.scenario} ${c.label} on ${c.broker.name}, ${variant} round ${round + 1}: ${message.trim()}`);
                        progress(`FAILED: ${failures[failures.length - 1]}`);
                    }
                }
            }
            results.push({ scenario: c.scenario, label: c.label, broker: c.broker.name, runs,
                medians: Object.fromEntries(c.variants.map((v) => [v, medians(runs[v])])) });
        }
    } finally {
        if (process.stderr.isTTY) process.stderr.write('\n');
        await Promise.all(brokers.map((b) => b.stop()));
    }

    printTables(results);
    const out = path.join(__dirname, '..', '..', 'bench', 'results');
    fs.mkdirSync(out, { recursive: true });
    fs.writeFileSync(path.join(out, 'latest.json'), JSON.stringify({
        date: new Date().toISOString(), node: process.version, cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model, pinning: pin.description, messages, rounds, failures, results,
    }, null, 2) + '\n');
    const dispatchResults = results.filter((r) => r.scenario === 'dispatch');
    let written = 'bench/results/latest.json';
    if (dispatchResults.length > 0) {
        const variantsSeen = [...new Set(dispatchResults.flatMap((r) => Object.keys(r.medians)))];
        const brokersSeen = [...new Set(dispatchResults.map((r) => r.broker))];
        const lines: ChartLine[] = brokersSeen.flatMap((broker) => variantsSeen.map((variant) => ({
            label: `${variant} (${broker})`,
            points: dispatchResults.filter((r) => r.broker === broker && r.medians[variant]?.rate != null)
                .map((r) => ({ subscriptions: Number(/^\d+/.exec(r.label)?.[0]), rate: r.medians[variant].rate as number })),
        }))).filter((l) => l.points.length > 0);
        fs.writeFileSync(path.join(out, 'latest.svg'), dispatchChart('Receive rate vs subscriptions on one connection (medians)', lines, (label) => ({
            color: variantsSeen.findIndex((v) => label.startsWith(`${v} (`)),
            dash: brokersSeen.findIndex((b) => label.endsWith(`(${b})`)),
        })));
        written += ' and bench/results/latest.svg';
    }
    console.log(`\nwritten: ${written} (medians of ${rounds} runs per variant, alternating)`);
    if (failures.length > 0) {
        console.log(`\n${failures.length} failed runs (left out of the medians):\n${failures.map((f) => `- ${f}`).join('\n')}`);
        process.exitCode = 1;
    }
}

main().catch((err: unknown) => {
    console.error(err);
    process.exit(1);
});
