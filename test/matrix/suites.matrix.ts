// The conformance suites of the broker matrix: the connection's, the queue's and the queue's acknowledgement, on every broker.
import { describe } from 'node:test';

import { describeConnectionConformance } from '../connect/MqttConnectionConformance';
import type { TestBroker } from '../helpers/brokers';
import { describeQueueAcknowledgement } from '../queues/MqttQueueAcknowledgement';
import { describeQueueConformance } from '../queues/MqttQueueConformance';
import { recordDeviation } from './evidence';
import { cellTitle, MATRIX_BROKERS } from './matrixBrokers';

for (const broker of MATRIX_BROKERS) {
    /** A broker for one suite: its stop() also removes what the broker kept on disk. */
    const start = async (): Promise<TestBroker> => {
        const started = await broker.start();
        return {
            kind: started.kind,
            host: started.host,
            get url() { return started.url; },
            get port() { return started.port; },
            stop: () => started.cleanup(),
            restart: () => started.restart(),
        };
    };
    describe(cellTitle(broker, 'connection-suite', broker.name), { skip: broker.skip }, () => {
        describeConnectionConformance(broker.name, start, false, broker.raisedQosKeepsOldSubscription
            ? { raisedQosKeepsOldSubscription: (evidence) => recordDeviation(broker, 'connection-suite', evidence) }
            : {});
    });
    describe(cellTitle(broker, 'queue-suite', broker.name), { skip: broker.skip }, () => {
        describeQueueConformance(broker.name, start, false,
            broker.lacks.has('shared') ? 'the broker has no shared subscriptions (see the matrix row)' : false);
    });
    describe(cellTitle(broker, 'queue-acks', broker.name), { skip: broker.skip }, () => {
        describeQueueAcknowledgement(broker.name, start, false);
    });
}
