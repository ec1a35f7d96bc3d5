// One measured run in a fresh process, so that variants never share a JIT, heap or event loop:
// `node worker.js '<json task>'` prints `RESULT <json>` and exits.
import { oursThroughput, rawThroughput, type RunResult, type ThroughputParams } from './throughput';

/** A run to make: which scenario and variant, with what. */
export interface WorkerTask {
    readonly scenario: 'throughput';
    readonly variant: 'raw' | 'ours';
    readonly params: ThroughputParams;
}

const RUNNERS: Record<WorkerTask['scenario'], Record<WorkerTask['variant'], (params: ThroughputParams) => Promise<RunResult>>> = {
    throughput: { raw: rawThroughput, ours: oursThroughput },
};

async function main(): Promise<void> {
    const task = JSON.parse(process.argv[2] ?? '') as WorkerTask;
    const result = await RUNNERS[task.scenario][task.variant](task.params);
    process.stdout.write(`RESULT ${JSON.stringify(result)}\n`);
}

if (require.main === module) {
    main().then(() => process.exit(0), (err: unknown) => {
        console.error(err);
        process.exit(1);
    });
}
