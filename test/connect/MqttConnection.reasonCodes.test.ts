// MQTT 5 reason codes and reason strings of refused CONNECT, SUBSCRIBE, PUBLISH and UNSUBSCRIBE, and of a DISCONNECT from the broker.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, it } from 'node:test';

import type * as mqttPacket from 'mqtt-packet';
import { ConnectionException } from 'pip-services3-commons-nodex';
import { LogLevel } from 'pip-services3-components-nodex';

import { MqttErrorCode } from '../../src';
import { mosquittoSkip, waitFor } from '../helpers/brokers';
import { RecordingListener, testReferences } from '../helpers/components';
import { fixture } from '../helpers/fixture';

/** Asserts an MQTT error with its reason code and the broker's reason string, in details and message. */
function hasReason(code: string, reasonCode: number, reasonString: string): (err: ConnectionException) => boolean {
    return (err) => {
        assert.ok(err instanceof ConnectionException, String(err));
        assert.equal(err.code, code);
        assert.equal(err.details.getAsNullableInteger('reason_code'), reasonCode);
        assert.equal(err.details.getAsString('reason_string'), reasonString);
        assert.ok(err.message.includes(reasonString), err.message);
        return true;
    };
}

/** A file in a fresh temp folder, for a Mosquitto ACL. */
function aclFile(lines: string[]): string {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pip-mqtt-acl-'));
    const file = path.join(dir, 'acl');
    fs.writeFileSync(file, lines.join('\n') + '\n');
    return file;
}

// Mosquitto 2.0 never sends reason strings and Aedes has no MQTT 5, so these answers come from a
// scripted peer (test/helpers/scriptedBroker.ts).
describe('MqttConnection MQTT 5 reason strings', { timeout: 30000 }, () => {
    it('puts the reason string of a refused CONNACK in the error', async (t) => {
        const f = fixture(t);
        let connects = 0;
        const broker = await f.scripted((packet, send) => {
            if (packet.cmd !== 'connect') return;
            connects++;
            send({ cmd: 'connack', sessionPresent: false, reasonCode: 0x8A, properties: { reasonString: 'account suspended' } });
        });
        const connection = f.connection(broker.url, 'options.protocol_version', 5, 'options.reconnect_timeout', 20);
        await assert.rejects(connection.open(null), hasReason(MqttErrorCode.ConnectRefused, 0x8A, 'account suspended'));
        assert.equal(connects, 1, 'no retry after a refusal');
    });

    it('puts the reason strings of SUBACK, PUBACK and UNSUBACK failures in errors', async (t) => {
        const f = fixture(t);
        const broker = await f.scripted((packet, send) => {
            switch (packet.cmd) {
                case 'connect':
                    send({ cmd: 'connack', sessionPresent: false, reasonCode: 0 });
                    break;
                case 'subscribe': {
                    const refused = packet.subscriptions[0].topic === 'refused';
                    send({ cmd: 'suback', messageId: packet.messageId, granted: [refused ? 0x97 : 1],
                        properties: refused ? { reasonString: 'subscription quota exceeded' } : {} });
                    break;
                }
                case 'publish':
                    send({ cmd: 'puback', messageId: packet.messageId, reasonCode: 0x99,
                        properties: { reasonString: 'payload must be JSON' } });
                    break;
                case 'unsubscribe':
                    send({ cmd: 'unsuback', messageId: packet.messageId, granted: [0x87],
                        properties: { reasonString: 'not yours to drop' } } as unknown as mqttPacket.IUnsubackPacket);
                    break;
                default:
                    break;
            }
        });
        const connection = f.connection(broker.url, 'options.protocol_version', 5, 'options.retry_connect', false);
        await connection.open(null);
        await assert.rejects(connection.subscribe('refused', { qos: 1 }, new RecordingListener()),
            hasReason(MqttErrorCode.SubscribeRejected, 0x97, 'subscription quota exceeded'));
        await assert.rejects(connection.publish('data', 'not json', { qos: 1 }),
            hasReason(MqttErrorCode.PublishFailed, 0x99, 'payload must be JSON'));
        const listener = new RecordingListener();
        await connection.subscribe('kept', { qos: 1 }, listener);
        await assert.rejects(connection.unsubscribe('kept', listener),
            hasReason(MqttErrorCode.UnsubscribeFailed, 0x87, 'not yours to drop'));

    });

    it('keeps the reason of a DISCONNECT from the broker in the status and the log', async (t) => {
        const f = fixture(t);
        const broker = await f.scripted((packet, send, socket) => {
            if (packet.cmd === 'connect') {
                send({ cmd: 'connack', sessionPresent: false, reasonCode: 0 });
                setTimeout(() => {
                    send({ cmd: 'disconnect', reasonCode: 0x8E, properties: { reasonString: 'session taken over by another client' } });
                    socket.end();
                }, 50);
            }
        });
        const { references, logger } = testReferences();
        const connection = f.connection(broker.url, 'options.protocol_version', 5, 'options.reconnect_timeout', 60000);
        connection.setReferences(references);
        await connection.open(null);
        await waitFor(() => !connection.isConnected(), 5000, 'the DISCONNECT');
        assert.equal(connection.getStatus().lastError, 'the broker sent DISCONNECT (reason code 142: session taken over by another client)');
        assert.ok(logger.messages(LogLevel.Warn).some((m) => m.includes('reason code 142: session taken over by another client')),
            logger.messages().join('\n'));
    });
});

describe('MqttConnection MQTT 5 reason codes (mosquitto)', { skip: mosquittoSkip(), timeout: 60000 }, () => {
    it('reports the reason codes of a refused CONNECT and PUBLISH', async (t) => {
        const f = fixture(t);
        const acl = aclFile(['user svc', 'topic readwrite open/#']);
        f.defer(() => fs.rmSync(path.dirname(acl), { recursive: true, force: true }));
        const broker = await f.mosquitto({ passwords: { svc: 'svc-pw' }, extraConfig: [`acl_file ${acl}`] });
        const connection = f.connection(broker.url, 'credential.username', 'svc', 'credential.password', 'svc-pw',
            'options.protocol_version', 5);
        const bad = f.connection(broker.url, 'credential.username', 'svc', 'credential.password', 'nope', 'options.protocol_version', 5);
        await assert.rejects(bad.open(null), (err: ConnectionException) => {
            assert.equal(err.code, MqttErrorCode.ConnectRefused);
            // Mosquitto answers a bad password with 0x87 "not authorized" (as with 5 in MQTT 3.1.1).
            assert.equal(err.details.getAsNullableInteger('reason_code'), 0x87);
            return true;
        });
        await connection.open(null);
        // Mosquitto 2.0 grants every SUBSCRIBE whatever its ACL says (no SUBACK refusal to show),
        // and closes a taken-over session's connection without a DISCONNECT; see the scripted broker test.
        await assert.rejects(connection.publish('closed/topic', 'x', { qos: 1 }), (err: ConnectionException) => {
            assert.equal(err.code, MqttErrorCode.PublishFailed);
            assert.equal(err.details.getAsNullableInteger('reason_code'), 0x87, 'not authorized');
            return true;
        });
        await connection.publish('open/topic', 'x', { qos: 1 });
        assert.equal(connection.isConnected(), true, 'a refused MQTT 5 publish keeps the connection');
    });
});
