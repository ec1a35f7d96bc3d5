// A consumer process killed (SIGKILL) in the middle of a stream of QoS 1 jobs loses none: what it
// received and had not completed comes again to the consumer that takes over its session.
import assert from 'node:assert/strict';
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';

import { ConfigParams } from 'pip-services3-commons-nodex';
import { MessageEnvelope } from 'pip-services3-messaging-nodex';

import { MqttMessageQueue } from '../../src';
import { uniqueTopic, waitFor } from '../helpers/brokers';
import { EACH_BROKER, fixture } from '../helpers/fixture';
import { PACKAGE_SRC } from '../helpers/process';

const JOBS = 300;

/**
 * A consumer process: receives jobs from the queue, takes 2 ms over each, completes it, and
 * prints `done <n>` after the complete (so a number printed was acknowledged, or is about to be).
 */
function startConsumer(url: string, topic: string, clientId: string): { child: ChildProcessWithoutNullStreams; done: number[] } {
    const script = `
        const { MqttMessageQueue } = require(${JSON.stringify(PACKAGE_SRC)});
        const { ConfigParams } = require('pip-services3-commons-nodex');
        (async () => {
            const queue = new MqttMessageQueue('jobs');
            queue.configure(ConfigParams.fromTuples('connection.uri', ${JSON.stringify(url)}, 'topic', ${JSON.stringify(topic)},
                'options.qos', 1, 'options.autosubscribe', true, 'client_id', ${JSON.stringify(clientId)}, 'options.clean_session', false));
            await queue.open(null);
            console.log('ready');
            for (;;) {
                const job = await queue.receive(null, 60000);
                if (!job) continue;
                await new Promise((resolve) => setTimeout(resolve, 2));
                await queue.complete(job);
                console.log('done ' + job.getMessageAsString());
            }
        })().catch((err) => { console.error(err); process.exit(2); });`;
    const child = spawn(process.execPath, ['-e', script], { stdio: ['pipe', 'pipe', 'pipe'] });
    const done: number[] = [];
    let rest = '';
    child.stdout.on('data', (chunk: Buffer) => {
        const lines = (rest + chunk.toString()).split('\n');
        rest = lines.pop() ?? '';
        for (const line of lines) if (line.startsWith('done ')) done.push(Number(line.slice(5)));
    });
    return { child, done };
}

function exited(child: ChildProcessWithoutNullStreams): Promise<void> {
    return child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : new Promise((resolve) => child.once('exit', () => resolve()));
}

for (const { kind, skip } of EACH_BROKER) {
    describe(`MqttMessageQueue consumer killed mid-stream (${kind})`, { skip, timeout: 90000 }, () => {
        it(`loses none of ${JOBS} QoS 1 jobs when its consumer is SIGKILLed and another takes over its session`, async (t) => {
            const f = fixture(t);
            const broker = await f.broker(kind);
            const topic = uniqueTopic('jobs');
            const clientId = `worker${randomBytes(6).toString('hex')}`;
            const producer = f.closing(new MqttMessageQueue('producer'));
            producer.configure(ConfigParams.fromTuples('connection.uri', broker.url, 'topic', topic, 'options.qos', 1));
            await producer.open(null);

            const first = startConsumer(broker.url, topic, clientId);
            f.defer(() => { first.child.kill('SIGKILL'); return exited(first.child); });
            await waitFor(() => first.done.length > 0 || first.child.exitCode !== null, 20000, 'the first consumer to start')
                .catch(() => undefined);
            const sending = (async () => {
                for (let n = 1; n <= JOBS; n++) await producer.send(null, new MessageEnvelope('c', 'job', String(n)));
            })();
            await waitFor(() => first.done.length >= JOBS / 3, 30000, `a third of the jobs done by the first consumer`);
            first.child.kill('SIGKILL');
            await exited(first.child);
            const doneBeforeKill = first.done.length;
            await sending;

            const second = startConsumer(broker.url, topic, clientId);
            f.defer(() => { second.child.kill('SIGKILL'); return exited(second.child); });
            const all = (): Set<number> => new Set([...first.done, ...second.done]);
            await waitFor(() => all().size === JOBS, 60000, `every job done (have ${all().size})`).catch(() => undefined);
            const missing = Array.from({ length: JOBS }, (_, i) => i + 1).filter((n) => !all().has(n));
            const again = first.done.length + second.done.length - all().size;
            t.diagnostic(`${JOBS} jobs: ${doneBeforeKill} done before the SIGKILL, ${second.done.length} by the second consumer, ` +
                `${again} done twice, ${missing.length} missing`);
            assert.deepEqual(missing, [], 'jobs never done');
        });
    });
}
