import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import type { IConnackPacket, IPublishPacket, Packet } from 'mqtt';
import { generate } from 'mqtt-packet';
import { type ApplicationException, BadRequestException, UnsupportedException } from 'pip-services3-commons-nodex';

import { MqttErrorCode } from '../../../src/connect/errors/MqttErrorCode';
import { MqttBrokerSupport } from '../../../src/connect/publish/MqttBrokerSupport';

const URI = 'mqtt://broker.test:1883';

type Properties = NonNullable<IConnackPacket['properties']>;

/** A successful CONNACK, with MQTT 5 properties when given. */
function connack(properties?: Properties): Pick<IConnackPacket, 'returnCode' | 'reasonCode' | 'properties'> {
    return properties === undefined ? { returnCode: 0 } : { reasonCode: 0, properties };
}

function publishPacket(messageId: number, qos: 0 | 1 | 2 = 2): IPublishPacket {
    return { cmd: 'publish', topic: 'a/b', payload: Buffer.from('x'), qos, retain: false, dup: false, messageId };
}

const pingresp: Packet = { cmd: 'pingresp' };

/** The exception `fn` throws (the assertion fails when it throws none, or something else). */
function thrown(fn: () => void): ApplicationException {
    try {
        fn();
    } catch (err) {
        return err as ApplicationException;
    }
    assert.fail('expected an exception');
}

/** One connection: its CONNACK, then the packets written and read in order, then its close; returns what onClose() said. */
function connection(support: MqttBrokerSupport, ...packets: ({ written: Packet } | { read: Packet })[]): boolean {
    support.onConnack(connack());
    for (const p of packets) {
        if ('written' in p) support.written(p.written);
        else support.read(p.read);
    }
    return support.onClose();
}

describe('MqttBrokerSupport', () => {
    describe('the highest QoS', () => {
        it('is options.max_qos until a CONNACK says otherwise', () => {
            assert.equal(new MqttBrokerSupport(2, URI).max, 2);
            const support = new MqttBrokerSupport(1, URI);
            assert.equal(support.max, 1);
            support.onConnack(connack({}));
            assert.equal(support.max, 1, 'a CONNACK without maximum QoS does not raise it above the configured');
            const err = thrown(() => support.checkQos('a/b', 2, 'publish'));
            assert.equal(err.details.getAsString('source'), 'options.max_qos');
        });

        it('is lowered by an MQTT 5 CONNACK maximum QoS, and raised back to the configured one by a later CONNACK without it', () => {
            const support = new MqttBrokerSupport(2, URI, 5);
            support.onConnack(connack({ maximumQoS: 1 }));
            assert.equal(support.max, 1);
            assert.equal(thrown(() => support.checkQos('a/b', 2, 'publish')).details.getAsString('source'), 'connack');
            support.onConnack(connack({ maximumQoS: 0 }));
            assert.equal(support.max, 0);
            support.onConnack(connack({}));
            assert.equal(support.max, 2);

            const capped = new MqttBrokerSupport(1, URI, 5);
            capped.onConnack(connack({ maximumQoS: 0 }));
            assert.equal(capped.max, 0);
            capped.onConnack(connack());
            assert.equal(capped.max, 1, 'back to options.max_qos, not above it');
        });

        it('is not changed by a refused CONNACK', () => {
            const support = new MqttBrokerSupport(2, URI, 5);
            support.onConnack({ reasonCode: 0x87, properties: { maximumQoS: 0 } });
            assert.equal(support.max, 2);
        });

        it('reads the CONNACK properties MQTT.js kept from the first connect', () => {
            const support = new MqttBrokerSupport(2, URI, 5);
            support.onFirstConnack({ maximumQoS: 1, receiveMaximum: 7 });
            assert.equal(support.max, 1);
            assert.equal(support.receiveMaximum, 7);
        });
    });

    describe('checkPublish', () => {
        it('refuses a QoS above the maximum with MQTT_QOS_NOT_SUPPORTED (details qos, max_qos, source)', () => {
            const support = new MqttBrokerSupport(1, URI);
            support.checkPublish('a/b', 'x', { qos: 1 });
            support.checkPublish('a/b', 'x', {});
            const err = thrown(() => support.checkPublish('a/b', 'x', { qos: 2 }));
            assert.ok(err instanceof UnsupportedException);
            assert.equal(err.code, MqttErrorCode.QosNotSupported);
            assert.equal(err.details.getAsInteger('qos'), 2);
            assert.equal(err.details.getAsInteger('max_qos'), 1);
            assert.equal(err.details.getAsString('source'), 'options.max_qos');
            assert.equal(err.details.getAsString('topic'), 'a/b');
            assert.equal(err.details.getAsNullableString('delivered'), null, 'nothing was sent');
            assert.match(err.message, /mqtt:\/\/broker\.test:1883 does not support QoS 2 \(options\.max_qos is 1\): publish at QoS 1 or lower/);
        });

        it('refuses a retained message when the CONNACK says retainAvailable false (MQTT_FEATURE_NOT_SUPPORTED), until a CONNACK without it', () => {
            const support = new MqttBrokerSupport(2, URI, 5);
            support.checkPublish('a/b', 'x', { retain: true });
            support.onConnack(connack({ retainAvailable: false }));
            support.checkPublish('a/b', 'x', { retain: false });
            const err = thrown(() => support.checkPublish('a/b', 'x', { retain: true }));
            assert.ok(err instanceof UnsupportedException);
            assert.equal(err.code, MqttErrorCode.FeatureNotSupported);
            assert.equal(err.details.getAsString('feature'), 'retain');
            assert.equal(err.details.getAsString('source'), 'connack');
            assert.equal(support.lacks('retain'), true);
            support.onConnack(connack({}));
            assert.equal(support.lacks('retain'), false);
            support.checkPublish('a/b', 'x', { retain: true });
        });

        it('refuses, on MQTT 5 only, a publish that does not fit in the CONNACK maximum packet size (MQTT_INVALID_PAYLOAD, details limit)', () => {
            const payload = Buffer.alloc(100);
            // The exact size of this PUBLISH, as MQTT.js's codec writes it.
            const size = generate({ cmd: 'publish', topic: 'a/b', payload, qos: 1, retain: false, dup: false, messageId: 1, properties: {} }, { protocolVersion: 5 }).length;

            const fits = new MqttBrokerSupport(2, URI, 5);
            fits.onConnack(connack({ maximumPacketSize: size }));
            fits.checkPublish('a/b', payload, { qos: 1 });

            const tight = new MqttBrokerSupport(2, URI, 5);
            tight.onConnack(connack({ maximumPacketSize: size - 1 }));
            const err = thrown(() => tight.checkPublish('a/b', payload, { qos: 1 }));
            assert.ok(err instanceof BadRequestException);
            assert.equal(err.code, MqttErrorCode.InvalidPayload);
            assert.equal(err.details.getAsInteger('limit'), size - 1);
            assert.equal(err.details.getAsString('topic'), 'a/b');
            assert.throws(() => tight.checkPublish('a/b', Buffer.alloc(10_000), { qos: 0 }), { code: MqttErrorCode.InvalidPayload });

            const v311 = new MqttBrokerSupport(2, URI, 4);
            v311.onConnack(connack({ maximumPacketSize: 10 }));
            v311.checkPublish('a/b', Buffer.alloc(10_000), { qos: 1 });

            tight.onConnack(connack({}));
            tight.checkPublish('a/b', Buffer.alloc(10_000), { qos: 1 });
        });

        it('with topic aliases on, counts the 3 bytes of the alias: a publish that fits only without them is refused', () => {
            const payload = 'y'.repeat(200);
            const plain = generate({ cmd: 'publish', topic: 'a/b', payload, qos: 0, retain: false, dup: false, properties: {} }, { protocolVersion: 5 }).length;
            const aliased = generate({ cmd: 'publish', topic: 'a/b', payload, qos: 0, retain: false, dup: false, properties: { topicAlias: 1 } }, { protocolVersion: 5 }).length;
            assert.equal(aliased - plain, 3, 'a topic alias property takes 3 bytes');

            const withoutAliases = new MqttBrokerSupport(2, URI, 5, false);
            withoutAliases.onConnack(connack({ maximumPacketSize: plain }));
            withoutAliases.checkPublish('a/b', payload, {});

            const withAliases = new MqttBrokerSupport(2, URI, 5, true);
            for (const limit of [plain, aliased - 1]) {
                withAliases.onConnack(connack({ maximumPacketSize: limit }));
                assert.throws(() => withAliases.checkPublish('a/b', payload, {}), { code: MqttErrorCode.InvalidPayload }, `refused at a limit of ${limit}`);
            }
            withAliases.onConnack(connack({ maximumPacketSize: aliased }));
            withAliases.checkPublish('a/b', payload, {});
        });
    });

    describe('checkSubscribe', () => {
        it('refuses a QoS above the maximum', () => {
            const support = new MqttBrokerSupport(0, URI);
            support.checkSubscribe('a/b', { qos: 0 }, false, false);
            const err = thrown(() => support.checkSubscribe('a/b', { qos: 1 }, false, false));
            assert.equal(err.code, MqttErrorCode.QosNotSupported);
            assert.match(err.message, /subscribe at QoS 0 or lower/);
        });

        it('refuses shared, wildcard and subscription identifier subscriptions the CONNACK says the broker lacks', () => {
            const support = new MqttBrokerSupport(2, URI, 5);
            const withId = { qos: 0, properties: { subscriptionIdentifier: 5 } } as const;
            support.checkSubscribe('$share/g/a/+', withId, true, true);
            support.onConnack(connack({ sharedSubscriptionAvailable: false, wildcardSubscriptionAvailable: false, subscriptionIdentifiersAvailable: false }));

            const shared = thrown(() => support.checkSubscribe('$share/g/a/b', { qos: 0 }, true, false));
            assert.ok(shared instanceof UnsupportedException);
            assert.equal(shared.code, MqttErrorCode.FeatureNotSupported);
            assert.equal(shared.details.getAsString('feature'), 'shared_subscriptions');
            assert.equal(thrown(() => support.checkSubscribe('a/+', { qos: 0 }, false, true)).details.getAsString('feature'), 'wildcard_subscriptions');
            assert.equal(thrown(() => support.checkSubscribe('a/b', withId, false, false)).details.getAsString('feature'), 'subscription_identifiers');
            support.checkSubscribe('a/b', { qos: 0 }, false, false);

            support.onConnack(connack({ sharedSubscriptionAvailable: true, wildcardSubscriptionAvailable: true, subscriptionIdentifiersAvailable: true }));
            support.checkSubscribe('$share/g/a/+', withId, true, true);
        });

        it('names each feature by itself: one lacking does not refuse the others', () => {
            for (const [properties, allowed] of [
                [{ sharedSubscriptionAvailable: false }, ['wildcard', 'id']],
                [{ wildcardSubscriptionAvailable: false }, ['shared', 'id']],
                [{ subscriptionIdentifiersAvailable: false }, ['shared', 'wildcard']],
            ] as [Properties, string[]][]) {
                const support = new MqttBrokerSupport(2, URI, 5);
                support.onConnack(connack(properties));
                if (allowed.includes('shared')) support.checkSubscribe('$share/g/a/b', { qos: 0 }, true, false);
                if (allowed.includes('wildcard')) support.checkSubscribe('a/#', { qos: 0 }, false, true);
                if (allowed.includes('id')) support.checkSubscribe('a/b', { qos: 0, properties: { subscriptionIdentifier: 1 } }, false, false);
            }
        });
    });

    it('takes the receive maximum from each CONNACK, 65535 when it gives none', () => {
        const support = new MqttBrokerSupport(2, URI, 5);
        assert.equal(support.receiveMaximum, 65535);
        support.onConnack(connack({ receiveMaximum: 10 }));
        assert.equal(support.receiveMaximum, 10);
        support.onConnack(connack({}));
        assert.equal(support.receiveMaximum, 65535);
    });

    it('keeps the limits of the last successful CONNACK through a refused reconnect attempt, so publishes made offline are held to them', () => {
        const support = new MqttBrokerSupport(2, URI, 5);
        support.onConnack({ reasonCode: 0, properties: { maximumPacketSize: 100, receiveMaximum: 10 } });
        support.onClose();
        // A reconnect attempt the broker refuses (0x88 Server unavailable): still disconnected.
        support.onConnack({ reasonCode: 0x88 });
        support.onClose();
        assert.equal(support.receiveMaximum, 10, 'the receive maximum of the broker in use');
        assert.throws(() => support.checkPublish('a/b', Buffer.alloc(1000), { qos: 1 }), { code: MqttErrorCode.InvalidPayload },
            'a publish made offline is still held to the maximum packet size of the last CONNACK');
    });

    describe('what the broker did with QoS 2 publishes', () => {
        it('a QoS 2 publish answered with PUBACK (the stored PUBLISH comes back) drops the maximum to 1, source puback, for good', () => {
            const support = new MqttBrokerSupport(2, URI);
            assert.equal(support.qos2Acknowledged({ cmd: 'pubrel', messageId: 1 }), true, 'PUBREC, PUBREL, PUBCOMP: QoS 2 works');
            assert.equal(support.qos2Acknowledged(undefined), true);
            assert.equal(support.max, 2);
            assert.equal(support.qos2Acknowledged(publishPacket(1)), false);
            assert.equal(support.max, 1);
            const err = thrown(() => support.checkPublish('a/b', 'x', { qos: 2 }));
            assert.equal(err.details.getAsString('source'), 'puback');
            assert.match(err.message, /acknowledged a QoS 2 publish with PUBACK/);
            support.onConnack(connack());
            assert.equal(support.max, 1, 'a CONNACK does not undo what the broker showed');
        });

        it('two closes in a row, each right after the same QoS 2 PUBLISH was written, drop the maximum to 1 (source broker_closed)', () => {
            const support = new MqttBrokerSupport(2, URI);
            assert.equal(connection(support, { written: publishPacket(7) }), false, 'once could be chance');
            assert.equal(support.max, 2);
            assert.equal(connection(support, { read: pingresp }, { written: publishPacket(7) }), true, 'MQTT.js resent it and the broker closed again');
            assert.equal(support.max, 1);
            const err = thrown(() => support.checkPublish('a/b', 'x', { qos: 2 }));
            assert.equal(err.details.getAsString('source'), 'broker_closed');
            assert.match(err.message, /closed the connection each time it received a QoS 2 publish/);
            assert.equal(support.onClose(), true, 'every later close says so too');
            assert.equal(connection(support, { read: pingresp }), true);
        });

        it('a broker that ever answered PUBREC is immune to the closes', () => {
            const support = new MqttBrokerSupport(2, URI);
            support.onConnack(connack());
            support.read({ cmd: 'pubrec', messageId: 3 });
            support.onClose();
            for (let i = 0; i < 3; i++) assert.equal(connection(support, { written: publishPacket(7) }), false);
            assert.equal(support.max, 2);
        });

        it('a PUBREC with a failure reason code does not make the broker immune', () => {
            const support = new MqttBrokerSupport(2, URI, 5);
            support.onConnack(connack());
            support.read({ cmd: 'pubrec', messageId: 3, reasonCode: 0x80 });
            support.onClose();
            assert.equal(connection(support, { written: publishPacket(7) }), false);
            assert.equal(connection(support, { written: publishPacket(7) }), true);
        });

        it('a packet read after the PUBLISH resets the count', () => {
            const support = new MqttBrokerSupport(2, URI);
            assert.equal(connection(support, { written: publishPacket(7) }), false);
            assert.equal(connection(support, { written: publishPacket(7) }, { read: pingresp }), false, 'the broker answered something after it');
            assert.equal(connection(support, { written: publishPacket(7) }), false, 'counting starts again');
            assert.equal(connection(support, { written: publishPacket(7) }), true);
        });

        it('a close after another packet, another message id or a QoS 1 PUBLISH starts the count again', () => {
            for (const other of [pingresp, publishPacket(8), publishPacket(7, 1)] as Packet[]) {
                const support = new MqttBrokerSupport(2, URI);
                assert.equal(connection(support, { written: publishPacket(7) }), false);
                assert.equal(connection(support, { written: other }), false, `the last packet written was ${JSON.stringify(other)}`);
                assert.equal(connection(support, { written: publishPacket(7) }), false, `counting starts again after ${other.cmd}`);
                assert.equal(support.max, 2);
            }
        });

        it('a close without a CONNACK before it neither counts nor resets the count', () => {
            const counts = new MqttBrokerSupport(2, URI);
            assert.equal(connection(counts, { written: publishPacket(7) }), false);
            counts.written(publishPacket(7));
            assert.equal(counts.onClose(), false, 'a failed connection attempt does not count');
            assert.equal(counts.max, 2);

            const resets = new MqttBrokerSupport(2, URI);
            assert.equal(connection(resets, { written: publishPacket(7) }), false);
            resets.onConnack({ returnCode: 5 });
            resets.written({ cmd: 'pingreq' });
            assert.equal(resets.onClose(), false, 'a refused CONNACK is no connection');
            assert.equal(connection(resets, { written: publishPacket(7) }), true, 'the failed attempt did not reset the count');
        });
    });

    describe('refusal', () => {
        it('says what became of the message for each value of delivered, and puts it in the details', () => {
            const support = new MqttBrokerSupport(1, URI);
            const cases: [('at_least_once' | 'no' | 'unknown'), RegExp][] = [
                ['at_least_once', /; this message was delivered at least once, not exactly once: publish at QoS 1 or lower$/],
                ['no', /; this message was not delivered: publish at QoS 1 or lower$/],
                ['unknown', /; this message was sent before, unanswered, and may have been delivered: publish at QoS 1 or lower$/],
            ];
            for (const [delivered, text] of cases) {
                const err = support.refusal('a/b', 2, 'publish', delivered);
                assert.ok(err instanceof UnsupportedException);
                assert.equal(err.code, MqttErrorCode.QosNotSupported);
                assert.match(err.message, text);
                assert.equal(err.details.getAsString('delivered'), delivered);
            }
            const plain = support.refusal('a/b', 2, 'subscribe');
            assert.match(plain.message, /\(options\.max_qos is 1\): subscribe at QoS 1 or lower$/);
            assert.equal(plain.details.getAsNullableString('delivered'), null);
        });

        it('names the CONNACK maximum in its text when that decided', () => {
            const support = new MqttBrokerSupport(2, URI, 5);
            support.onConnack(connack({ maximumQoS: 0 }));
            const err = support.refusal('a/b', 1, 'publish');
            assert.match(err.message, /\(its CONNACK says maximum QoS 0\)/);
            assert.equal(err.details.getAsInteger('max_qos'), 0);
        });
    });
});
