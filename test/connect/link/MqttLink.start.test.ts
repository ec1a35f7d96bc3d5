// The net under every input check: when MQTT.js throws while it connects, MqttLink.start leaves nothing running.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { ConfigParams, ConnectionException } from 'pip-services3-commons-nodex';
import { CompositeCounters, CompositeLogger } from 'pip-services3-components-nodex';

import { MqttConnectionResolver } from '../../../src/connect/config/MqttConnectionResolver';
import { resolveSettings, type MqttConnectionSettings } from '../../../src/connect/config/MqttConnectionSettings';
import { MqttErrorCode } from '../../../src/connect/errors/MqttErrorCode';
import { MqttLink, type MqttLinkEvents } from '../../../src/connect/link/MqttLink';
import { delay, waitFor } from '../../helpers/brokers';
import { fixture } from '../../helpers/fixture';

/** Sockets and timers alive in the process. */
function liveHandles(): number {
    return process.getActiveResourcesInfo().filter((kind) => kind === 'TCPSocketWrap' || kind === 'Timeout').length;
}

const IGNORED: MqttLinkEvents = { message: () => undefined, closed: () => undefined, lost: () => undefined, resumed: () => undefined, failed: () => undefined,
    poisoned: () => undefined };

describe('MqttLink.start when MQTT.js throws while connecting', () => {
    it('rejects MQTT_CONNECT_FAILED and leaves no socket, timer or reconnect loop behind', async (t) => {
        const f = fixture(t);
        const broker = await f.aedes();
        const config = ConfigParams.fromTuples('connection.uri', broker.url, 'options.reconnect_timeout', 50, 'options.connect_timeout', 1000);
        const resolver = new MqttConnectionResolver();
        resolver.configure(config);
        const settings = await resolveSettings(null, resolver, config, 'start-net', new AbortController().signal);
        // What the configuration checks refuse, given straight to the link: mqtt-packet cannot write
        // a user name over 65535 bytes, and throws inside MQTT.js's connect().
        const unwritable: MqttConnectionSettings = { ...settings, connection: { ...settings.connection, username: 'u'.repeat(70000) } };
        const uncaught: unknown[] = [];
        const record = (err: unknown): void => { uncaught.push(err); };
        process.on('uncaughtException', record);
        t.after(() => { process.off('uncaughtException', record); });
        const before = liveHandles();
        const reporting = { logger: new CompositeLogger(), counters: new CompositeCounters() };
        const err = await MqttLink.start(null, unwritable, reporting, IGNORED, new AbortController().signal).then(() => null, (e: unknown) => e);
        assert.ok(err instanceof ConnectionException, String(err));
        assert.equal(err.code, MqttErrorCode.ConnectFailed);
        await waitFor(() => liveHandles() <= before, 2000, 'the sockets and timers of the failed start to end').catch(() => undefined);
        // Long enough for reconnect attempts at 50 ms to show.
        await delay(300);
        assert.equal(liveHandles(), before, `alive: ${process.getActiveResourcesInfo().join(', ')}`);
        assert.deepEqual(uncaught, []);
    });
});
