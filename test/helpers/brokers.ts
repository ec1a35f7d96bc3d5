// Brokers for tests: the embedded Aedes broker here, Mosquitto in ./mosquitto, network helpers in ./net.
import { EmbeddedBroker, type EmbeddedBrokerOptions } from '../../dev/EmbeddedBroker';

import type { TestBroker } from './net';

export * from './net';
export * from './mosquitto';

export interface AedesTestBroker extends TestBroker {
    kind: 'aedes';
    broker: EmbeddedBroker;
}

/** Starts an in-process Aedes broker (see EmbeddedBroker) on a free port. */
export async function startAedes(options?: EmbeddedBrokerOptions): Promise<AedesTestBroker> {
    const broker = await EmbeddedBroker.start(options);
    return {
        kind: 'aedes',
        broker,
        url: broker.url,
        host: broker.host,
        port: broker.port,
        stop: () => broker.stop(),
        restart: () => broker.restart(),
    };
}

