// `npm run bench`: starts its own brokers, runs each scenario's variants in fresh processes,
// alternating them (A B A B ...), and prints medians with the ratio to raw MQTT.js.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';

import { mosquittoAvailable, startMosquitto } from '../test/helpers/mosquitto';
import type { RunResult } from './throughput';
import type { WorkerTask } from './worker';

interface BenchBroker {
    readonly name: string;
    readonly url: string;
    stop(): Promise<void>;
}

/** The embedded Aedes broker, in a process of its own. */
async function startAedesProcess(): Promise<BenchBroker> {
    const child = spawn(process.execPath, [path.join(__dirname, 'brokerProcess.js')], { stdio: ['ignore', 'pipe', 'inherit'] });
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

async function startBrokers(which: string): Promise<BenchBroker[]> {
    if (process.env.MQTT_URI) return [{ name: 'MQTT_URI', url: process.env.MQTT_URI, stop: () => Promise.resolve() }];
    const brokers: BenchBroker[] = [];
    if (which === 'all' || which === 'aedes') brokers.push(await startAedesProcess());
    if ((which === 'all' && mosquittoAvailable()) || which === 'mosquitto') {
        const mosquitto = await startMosquitto();
        brokers.push({ name: 'mosquitto', url: mosquitto.url, stop: () => mosquitto.cleanup() });
    }
    return brokers;
}

/** Runs one task in a fresh worker process. */
function runWorker(task: WorkerTask): Promise<RunResult> {
    return new Promise((resolve, reject) => {
        const child = spawn(process.execPath, [path.join(__dirname, 'worker.js'), JSON.stringify(task)], { stdio: ['ignore', 'pipe', 'pipe'] });
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
    readonly scenario: WorkerTask['scenario'];
    readonly label: string;
    readonly broker: BenchBroker;
    readonly params: WorkerTask['params'];
}

interface CaseResult {
    readonly scenario: string;
    readonly label: string;
    readonly broker: string;
    readonly runs: Record<string, RunResult[]>;
    readonly medianRate: Record<string, number>;
    readonly medianCpuUs: Record<string, number>;
    readonly ratio: number;
}

async function main(): Promise<void> {
    const { values } = parseArgs({
        options: {
            scenario: { type: 'string', default: '' },
            messages: { type: 'string', default: '20000' },
            payload: { type: 'string', default: '' },
            broker: { type: 'string', default: 'all' },
            rounds: { type: 'string', default: '3' },
        },
    });
    const messages = Number(values.messages);
    const rounds = Number(values.rounds);
    const payloadSizes = values.payload ? [Number(values.payload)] : [64, 4096];
    const filter = new RegExp(values.scenario ?? '', 'i');

    const brokers = await startBrokers(values.broker ?? 'all');
    const cases: BenchCase[] = [];
    for (const broker of brokers) {
        for (const qos of [0, 1] as const) {
            for (const payload of payloadSizes) {
                const label = `QoS ${qos}, ${payload} B`;
                if (!filter.test(`throughput ${label}`)) continue;
                cases.push({ scenario: 'throughput', label, broker, params: { url: broker.url, messages, payload, qos, window: 100 } });
            }
        }
    }
    const variants: WorkerTask['variant'][] = ['raw', 'ours'];
    const results: CaseResult[] = [];
    const total = cases.length * rounds * variants.length;
    let done = 0;
    try {
        for (const c of cases) {
            const runs: Record<string, RunResult[]> = { raw: [], ours: [] };
            for (let round = 0; round < rounds; round++) {
                // A B, then B A: neither variant always goes first.
                const order = round % 2 === 0 ? variants : [...variants].reverse();
                for (const variant of order) {
                    process.stderr.write(`\r[${++done}/${total}] ${c.scenario} ${c.label} on ${c.broker.name}: ${variant} (round ${round + 1})   `);
                    runs[variant].push(await runWorker({ scenario: c.scenario, variant, params: c.params }));
                }
            }
            const medianRate = Object.fromEntries(variants.map((v) => [v, median(runs[v].map((r) => r.rate))]));
            const medianCpuUs = Object.fromEntries(variants.map((v) => [v, median(runs[v].map((r) => r.cpuPerMessageUs))]));
            results.push({ scenario: c.scenario, label: c.label, broker: c.broker.name, runs, medianRate, medianCpuUs, ratio: medianRate.ours / medianRate.raw });
        }
    } finally {
        process.stderr.write('\n');
        await Promise.all(brokers.map((b) => b.stop()));
    }

    const rows = results.map((r) => `| ${r.scenario} | ${r.broker} | ${r.label} | ${Math.round(r.medianRate.raw)} | ${Math.round(r.medianRate.ours)} | ` +
        `${r.ratio.toFixed(2)}x | ${r.medianCpuUs.raw.toFixed(1)} / ${r.medianCpuUs.ours.toFixed(1)} |`);
    console.log(['| Scenario | Broker | Case | raw MQTT.js msg/s | ours msg/s | ours / raw | CPU µs/msg raw / ours |',
        '| --- | --- | --- | --- | --- | --- | --- |', ...rows].join('\n'));
    const out = path.join(__dirname, '..', '..', 'bench', 'results');
    fs.mkdirSync(out, { recursive: true });
    fs.writeFileSync(path.join(out, 'latest.json'), JSON.stringify({
        date: new Date().toISOString(), node: process.version, cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model, messages, rounds, results,
    }, null, 2) + '\n');
    console.log(`\nwritten: bench/results/latest.json (medians of ${rounds} runs per variant, alternating)`);
}

main().catch((err: unknown) => {
    console.error(err);
    process.exit(1);
});
