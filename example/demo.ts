/**
 * The demo: a Pip.Services container configured from demo.yml, on the embedded broker (or the
 * broker at MQTT_URI). A producer queue sends jobs; two worker queues in one shared-subscription
 * group split them; an audit queue on a wildcard topic sees every one. Run it with `npm start`.
 */
import { join } from 'node:path';

import { ConfigParams, Descriptor } from 'pip-services3-commons-nodex';
import { Container } from 'pip-services3-container-nodex';
import type { IMessageQueue, IMessageReceiver, MessageEnvelope } from 'pip-services3-messaging-nodex';

import { EmbeddedBroker } from '../dev/EmbeddedBroker';
import { DefaultMqttFactory } from '../src';

/** demo.yml sits beside this file's source; the compiled file runs from dist/example. */
const CONFIG = join(__dirname, '../../example/demo.yml');
const JOBS = 10;

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
    } finally {
        await container.close('demo');
        await broker?.stop();
    }
}

main().catch((err: unknown) => {
    console.error(err);
    process.exitCode = 1;
});
