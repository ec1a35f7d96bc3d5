/**
 * A short tour of MqttConnection: starts the embedded broker (or uses MQTT_URI), subscribes
 * with wildcard filters, publishes, prints what arrives and closes. Run it with `npm start`.
 */
import { ConfigParams, Descriptor, References } from 'pip-services3-commons-nodex';
import { ConsoleLogger, LogLevel } from 'pip-services3-components-nodex';

import { EmbeddedBroker } from '../dev/EmbeddedBroker';
import { type IMqttMessageListener, MqttConnection } from '../src';

async function main(): Promise<void> {
    const external = process.env.MQTT_URI;
    const broker = external ? null : await EmbeddedBroker.start();
    const uri = external ?? broker!.url;
    console.log(external ? `Using the broker at MQTT_URI` : `Started the embedded broker at ${uri}`);

    const logger = new ConsoleLogger();
    logger.setLevel(LogLevel.Info);
    const connection = new MqttConnection();
    connection.configure(ConfigParams.fromTuples('connection.uri', uri));
    connection.setReferences(References.fromTuples(new Descriptor('pip-services', 'logger', 'console', 'default', '1.0'), logger));

    const expected = 7;
    let received = 0;
    let allReceived!: () => void;
    const done = new Promise<void>((resolve) => { allReceived = resolve; });
    const printer = (name: string): IMqttMessageListener => ({
        onMessage: (topic, data) => {
            console.log(`  ${name.padEnd(32)} <- ${topic}: ${data.toString()}`);
            if (++received === expected) allReceived();
        },
    });

    try {
        await connection.open('demo');
        await connection.subscribe('demo/sensors/+/temperature', { qos: 1 }, printer('demo/sensors/+/temperature'));
        await connection.subscribe('demo/sensors/kitchen/#', { qos: 1 }, printer('demo/sensors/kitchen/#'));
        await connection.subscribe('demo/alerts', { qos: 0 }, printer('demo/alerts'));

        console.log('Publishing...');
        await connection.publish('demo/sensors/kitchen/temperature', '21.5', { qos: 1 }); // both sensor filters
        await connection.publish('demo/sensors/garage/temperature', '9.0', { qos: 1 });   // the + filter
        await connection.publish('demo/sensors/kitchen/humidity', '40%', { qos: 1 });     // the # filter
        await connection.publish('demo/sensors/kitchen', 'online', { qos: 1 });          // # matches the parent level
        await connection.publish('demo/alerts', 'door open');                               // exact filter
        await connection.publish('demo/sensors/garage/temperature/raw', 'x', { qos: 1 }); // no filter: + is one level
        await connection.publish('demo/sensors/attic/temperature', '15.2', { qos: 1 });

        const timeout = setTimeout(() => allReceived(), 5000);
        await done;
        clearTimeout(timeout);
        console.log(`Received ${received} of ${expected} expected deliveries.`);
        if (received !== expected) process.exitCode = 1;
    } finally {
        await connection.close('demo');
        await broker?.stop();
    }
}

main().catch((err: unknown) => {
    console.error(err);
    process.exitCode = 1;
});
