/**
 * The demo: a Pip.Services container configured from demo.yml, on the embedded broker (or the
 * broker at MQTT_URI). A producer queue sends jobs; two worker queues in one shared-subscription
 * group split them; an audit queue on a wildcard topic sees every one. Then at-least-once: a
 * worker process (worker.ts) is killed in the middle of a job and started again, and finishes
 * every job. Run it with `npm start`.
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';

import { ConfigParams, Descriptor } from 'pip-services3-commons-nodex';
import { Container } from 'pip-services3-container-nodex';
import { type IMessageQueue, type IMessageReceiver, MessageEnvelope } from 'pip-services3-messaging-nodex';

import { EmbeddedBroker } from '../dev/EmbeddedBroker';
import { DefaultMqttFactory } from '../src';

/** demo.yml sits beside this file's source; the compiled file runs from dist/example. */
const CONFIG = join(__dirname, '../../example/demo.yml');
const JOBS = 10;
/** Jobs for the worker process, and the one it is killed in the middle of. */
const WORK = 6;
const KILLED_IN = 'job 3';

class DemoContainer extends Container {
    public queue(name: string): IMessageQueue {
        return this._references.getOneRequired<IMessageQueue>(new Descriptor('pip-services', 'message-queue', 'mqtt', name, '1.0'));
    }
}

/** Prints and keeps what a queue receives. */
function printer(name: string, received: string[], onEach: () => void): IMessageReceiver {
    return {
        receiveMessage: (message: MessageEnvelope) => {
            const text = message.getMessageAsString();
            received.push(text);
            console.log(`  ${name.padEnd(8)} <- ${text}`);
            onEach();
            return Promise.resolve();
        },
    };
}

async function main(): Promise<void> {
    const external = process.env.MQTT_URI;
    const broker = external ? null : await EmbeddedBroker.start();
    const uri = external ?? broker!.url;
    console.log(external ? 'Using the broker at MQTT_URI' : `Started the embedded broker at ${uri}`);

    const container = new DemoContainer('mqtt-demo');
    container.addFactory(new DefaultMqttFactory());
    container.readConfigFromFile('demo', CONFIG, ConfigParams.fromTuples('MQTT_URI', uri));
    await container.open('demo');
    try {
        const received = { worker1: [] as string[], worker2: [] as string[], audit: [] as string[] };
        let allDone!: () => void;
        const done = new Promise<void>((resolve) => { allDone = resolve; });
        const check = (): void => {
            if (received.worker1.length + received.worker2.length >= JOBS && received.audit.length >= JOBS) allDone();
        };
        for (const name of ['worker1', 'worker2', 'audit'] as const) {
            container.queue(name).listen('demo', printer(name, received[name], check));
        }

        console.log(`Sending ${JOBS} jobs to demo/jobs...`);
        const jobs = container.queue('jobs');
        for (let i = 1; i <= JOBS; i++) await jobs.sendAsObject('demo', 'job', { id: i, task: `resize image ${i}` });

        const timeout = setTimeout(allDone, 10000);
        await done;
        clearTimeout(timeout);

        const handled = [...received.worker1, ...received.worker2];
        const unique = new Set(handled).size;
        console.log(`worker1 handled ${received.worker1.length}, worker2 handled ${received.worker2.length}: ` +
            `${unique} of ${JOBS} jobs, ${handled.length - unique} twice; audit saw ${received.audit.length}.`);
        if (unique !== JOBS || handled.length !== JOBS || received.audit.length !== JOBS
            || received.worker1.length === 0 || received.worker2.length === 0) {
            console.log('The work was not split as expected.');
            process.exitCode = 1;
        }
        if (!(await killedWorker(container, uri))) process.exitCode = 1;
    } finally {
        await container.close('demo');
        await broker?.stop();
    }
}

/**
 * Sends WORK jobs to a worker process, kills it (SIGKILL) when it has started KILLED_IN, starts
 * it again with the same client id, and waits until every job is finished.
 * @returns true when every job was finished.
 */
async function killedWorker(container: DemoContainer, uri: string): Promise<boolean> {
    console.log(`At least once: ${WORK} jobs for a worker process, killed in the middle of ${KILLED_IN}...`);
    const clientId = `demo-worker-${process.pid}`;
    const finished = new Set<string>();
    let killed = false;
    const start = (): Promise<{ exited: Promise<void>; kill: () => void }> => new Promise((resolve) => {
        const child = spawn(process.execPath, [join(__dirname, 'worker.js'), uri, 'worker/jobs', clientId], { stdio: ['ignore', 'pipe', 'inherit'] });
        const exited = new Promise<void>((done) => child.once('exit', () => done()));
        const handle = { exited, kill: () => { child.kill('SIGKILL'); } };
        let rest = '';
        child.stdout.on('data', (chunk: Buffer) => {
            const lines = (rest + chunk.toString()).split('\n');
            rest = lines.pop() ?? '';
            for (const line of lines) {
                if (line === 'ready') resolve(handle);
                if (line.startsWith('started ')) console.log(`  worker   started ${line.slice(8)}`);
                if (line.startsWith('finished ')) {
                    finished.add(line.slice(9));
                    console.log(`  worker   finished ${line.slice(9)}`);
                }
                if (line === `started ${KILLED_IN}` && !killed) {
                    killed = true;
                    handle.kill();
                    console.log(`  killed the worker (SIGKILL) in the middle of ${KILLED_IN}; starting it again`);
                }
            }
        });
        // A worker that dies before it is ready (it cannot connect, say) ends the wait too.
        void exited.then(() => resolve(handle));
    });
    const first = await start();
    const work = container.queue('work');
    for (let i = 1; i <= WORK; i++) await work.send('demo', new MessageEnvelope('demo', 'job', `job ${i}`));
    await first.exited;
    const second = await start();
    const deadline = Date.now() + 20000;
    while (finished.size < WORK && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
    second.kill();
    await second.exited;
    const lost = WORK - finished.size;
    console.log(`The worker finished ${finished.size} of ${WORK} jobs after it was killed in the middle of ${KILLED_IN}: ` +
        `${lost === 0 ? 'nothing lost' : `${lost} lost`}.`);
    return killed && lost === 0;
}

main().catch((err: unknown) => {
    console.error(err);
    process.exitCode = 1;
});
