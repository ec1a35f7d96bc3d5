/**
 * The demo's worker process: takes jobs from a queue with a persistent session (a fixed client id,
 * clean_session false) and completes each one only when it is done, so a worker killed in the
 * middle of a job gets that job again when it starts again. Started by demo.ts with
 * `node dist/example/worker.js <broker uri> <topic> <client id>`.
 */
import { ConfigParams } from 'pip-services3-commons-nodex';

import { MqttMessageQueue } from '../src';

/** How long a job takes. */
const JOB_MS = 150;

async function work(uri: string, topic: string, clientId: string): Promise<void> {
    const queue = new MqttMessageQueue('work');
    queue.configure(ConfigParams.fromTuples('connection.uri', uri, 'topic', topic, 'client_id', clientId,
        'options.clean_session', false, 'options.qos', 1, 'options.serialize_envelope', true, 'options.autosubscribe', true));
    await queue.open('worker');
    console.log('ready');
    for (;;) {
        const job = await queue.receive('worker', 60000);
        if (!job) continue;
        const id = job.getMessageAsString();
        console.log(`started ${id}`);
        await new Promise((resolve) => setTimeout(resolve, JOB_MS));
        // Acknowledged to the broker only now: until here, a crash leaves the job with the broker.
        await queue.complete(job);
        console.log(`finished ${id}`);
    }
}

const [uri, topic, clientId] = process.argv.slice(2);
work(uri, topic, clientId).catch((err: unknown) => {
    console.error(err);
    process.exit(1);
});
