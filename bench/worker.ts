// One measured run in a fresh process, so that variants never share a JIT, heap or event loop:
// `node --expose-gc worker.js '<json task>'` prints `RESULT <json>` and exits.
import { oursDispatch, predecessorDispatch, rawDispatch } from './dispatch';
import { oursLatency, rawLatency } from './latency';
import { oursQueue, predecessorQueue, rawQueue } from './queue';
import { oursThroughput, rawThroughput } from './throughput';

/** What every run reports; scenarios add their own numbers. */
export interface RunResult {
    /** Messages per second. */
    readonly rate: number;
    /** CPU time of the whole worker process per message, in microseconds. */
    readonly cpuPerMessageUs: number;
    readonly [metric: string]: number | null;
}

/** A run to make: which scenario and variant, with what. */
export interface WorkerTask {
    readonly scenario: string;
    readonly variant: string;
    readonly params: object;
}

type Runner = (params: never) => Promise<RunResult>;

/** The variants of each scenario. */
export const RUNNERS: Readonly<Record<string, Readonly<Record<string, Runner>>>> = {
    throughput: { raw: rawThroughput, ours: oursThroughput },
    dispatch: { raw: rawDispatch, ours: oursDispatch, predecessor: predecessorDispatch },
    queue: { raw: rawQueue, ours: oursQueue, predecessor: predecessorQueue },
    latency: { raw: rawLatency, ours: oursLatency },
};

async function main(): Promise<void> {
    const task = JSON.parse(process.argv[2] ?? '') as WorkerTask;
    const run = RUNNERS[task.scenario]?.[task.variant];
    if (!run) throw new Error(`no variant ${task.variant} of scenario ${task.scenario}`);
    const result = await run(task.params as never);
    process.stdout.write(`RESULT ${JSON.stringify(result)}\n`);
}

if (require.main === module) {
    main().then(() => process.exit(0), (err: unknown) => {
        console.error(err);
        process.exit(1);
    });
}
