import type { IConnackPacket, Packet } from 'mqtt';
import { UnsupportedException } from 'pip-services3-commons-nodex';

import { NO_CID } from '../../shared/pip';
import { MqttErrorCode } from '../errors/MqttErrorCode';

type Qos = 0 | 1 | 2;

/** Where the highest usable QoS comes from (`details.source` of `MQTT_QOS_NOT_SUPPORTED`). */
export type MqttQosSource = 'options.max_qos' | 'connack' | 'broker_closed' | 'puback';

/** What an MQTT 5 broker may say in CONNACK that it lacks (`details.feature` of `MQTT_FEATURE_NOT_SUPPORTED`). */
export type MqttBrokerFeature = 'retain' | 'wildcard_subscriptions' | 'shared_subscriptions' | 'subscription_identifiers';

/**
 * How many closes in a row, each right after the same QoS 2 PUBLISH was written (the last packet
 * either way before the close), show that the broker refuses QoS 2: the first could be chance,
 * the second is MQTT.js's resend meeting the same end.
 */
const CLOSES_TO_GIVE_UP = 2;

/**
 * What the broker supports. Its MQTT 5 CONNACK may say that it has no retained messages, wildcard
 * or shared subscriptions, or subscription identifiers; using them anyway would make it drop the
 * connection (MQTT 5, 3.2.2.3), so they are refused up front.
 *
 * And the highest QoS a broker takes, with what tells it: `options.max_qos`, an MQTT 5 CONNACK's
 * maximum QoS, and what an MQTT 3.1.1 broker did with a QoS 2 publish. Brokers without QoS 2 do
 * not say so in MQTT 3.1.1: NATS closes the connection on a QoS 2 PUBLISH (and MQTT.js would send it
 * again after every reconnect, forever); RabbitMQ 3.x answers it with PUBACK, as QoS 1.
 */
export class MqttBrokerSupport {
    private _connack: Qos = 2;
    private _learned: Qos = 2;
    private _learnedFrom: MqttQosSource | null = null;
    private _max: Qos;
    /** True once the broker answered a QoS 2 publish with PUBREC: it supports QoS 2. */
    private _qos2Seen = false;
    /** True from a successful CONNACK to the next close. */
    private _connected = false;
    /** The last packet written or read; null when the last one was read (the broker answered something). */
    private _lastWritten: Packet | null = null;
    /** The message id of the QoS 2 PUBLISH the previous closes came right after, and how many in a row. */
    private _closesAfter: { messageId: number; closes: number } | null = null;
    /** The features the last CONNACK said the broker lacks. */
    private _lacking: ReadonlySet<MqttBrokerFeature> = new Set();

    public constructor(private readonly _configured: Qos, private readonly _displayUri: string) {
        this._max = _configured;
    }

    /** The highest QoS to publish or subscribe with. */
    public get max(): Qos {
        return this._max;
    }

    /** Reads a CONNACK (MQTT 5: its maximum QoS; a missing one means 2). */
    public onConnack(packet: Pick<IConnackPacket, 'returnCode' | 'reasonCode' | 'properties'>): void {
        if ((packet.returnCode ?? packet.reasonCode ?? 0) !== 0) return;
        this._connected = true;
        const properties = packet.properties;
        const maximum = properties?.maximumQoS;
        this._connack = maximum === 0 || maximum === 1 ? maximum : 2;
        this.update();
        const lacking = new Set<MqttBrokerFeature>();
        if (properties?.retainAvailable === false) lacking.add('retain');
        if (properties?.wildcardSubscriptionAvailable === false) lacking.add('wildcard_subscriptions');
        if (properties?.sharedSubscriptionAvailable === false) lacking.add('shared_subscriptions');
        if (properties?.subscriptionIdentifiersAvailable === false) lacking.add('subscription_identifiers');
        this._lacking = lacking;
    }

    /** True when the broker said in CONNACK that it lacks the feature. */
    public lacks(feature: MqttBrokerFeature): boolean {
        return this._lacking.has(feature);
    }

    /** The error for a call that needs a feature the broker said it lacks; `what` is 'publish' or 'subscribe'. */
    public featureRefusal(topic: string, feature: MqttBrokerFeature, what: string): UnsupportedException {
        const name = {
            retain: 'retained messages',
            wildcard_subscriptions: 'wildcard subscriptions',
            shared_subscriptions: 'shared subscriptions',
            subscription_identifiers: 'subscription identifiers',
        }[feature];
        return new UnsupportedException(NO_CID, MqttErrorCode.FeatureNotSupported,
            `MQTT broker at ${this._displayUri} does not support ${name} (its CONNACK says so): cannot ${what} ${topic}`)
            .withDetails('topic', topic).withDetails('feature', feature).withDetails('source', 'connack');
    }

    /** Reads the CONNACK properties MQTT.js kept from the first connect. */
    public onFirstConnack(properties: IConnackPacket['properties'] | undefined): void {
        this.onConnack({ returnCode: 0, properties });
    }

    /** A packet was written (MQTT.js 'packetsend'). On every packet: one assignment. */
    public written(packet: Packet): void {
        this._lastWritten = packet;
    }

    /** A packet was read (MQTT.js 'packetreceive'); `pubrec` shows QoS 2 works. */
    public read(packet: Packet): void {
        this._lastWritten = null;
        if (packet.cmd === 'pubrec' && (packet.reasonCode ?? 0) < 0x80) this._qos2Seen = true;
    }

    private update(): void {
        this._max = Math.min(this._configured, this._connack, this._learned) as Qos;
    }

    /** What decided the maximum: the first source that is at it. */
    private source(): MqttQosSource {
        if (this._configured === this._max) return 'options.max_qos';
        if (this._connack === this._max) return 'connack';
        return this._learnedFrom ?? 'options.max_qos';
    }

    /** The error for a call at `qos` above the maximum; `what` is 'publish' or 'subscribe'. */
    public refusal(topic: string, qos: number, what: string, delivered?: 'at_least_once' | 'no' | 'unknown'): UnsupportedException {
        const source = this.source();
        const reason = {
            'options.max_qos': `options.max_qos is ${this._max}`,
            connack: `its CONNACK says maximum QoS ${this._max}`,
            broker_closed: 'it closed the connection each time it received a QoS 2 publish, without acknowledging it',
            puback: 'it acknowledged a QoS 2 publish with PUBACK, as QoS 1',
        }[source];
        const outcome = delivered === 'at_least_once' ? '; this message was delivered at least once, not exactly once'
            : delivered === 'no' ? '; this message was not delivered'
                : delivered === 'unknown' ? '; this message was sent before, unanswered, and may have been delivered' : '';
        const error = new UnsupportedException(NO_CID, MqttErrorCode.QosNotSupported,
            `MQTT broker at ${this._displayUri} does not support QoS ${qos} (${reason})${outcome}: ${what} at QoS ${this._max} or lower`)
            .withDetails('topic', topic).withDetails('qos', qos).withDetails('max_qos', this._max).withDetails('source', source);
        if (delivered !== undefined) error.withDetails('delivered', delivered);
        return error;
    }

    /**
     * A QoS 2 publish was acknowledged; `stored` is the packet MQTT.js took out of its store:
     * PUBREL after PUBREC and PUBCOMP, the PUBLISH itself when the broker answered PUBACK.
     * False when it was taken as QoS 1 (the maximum drops to 1).
     */
    public qos2Acknowledged(stored: unknown): boolean {
        if ((stored as { cmd?: unknown } | undefined)?.cmd === 'publish') {
            this.learn(1, 'puback');
            return false;
        }
        return true;
    }

    private learn(qos: Qos, from: MqttQosSource): void {
        if (qos >= this._learned) return;
        this._learned = qos;
        this._learnedFrom = from;
        this.update();
    }

    /**
     * The connection closed. A close counts against a QoS 2 PUBLISH when the connection had its
     * CONNACK, the PUBLISH was the last packet either way before the close (written, with no
     * answer of any kind after it), and the broker never answered a QoS 2 publish with PUBREC.
     * CLOSES_TO_GIVE_UP such closes in a row after the same PUBLISH (MQTT.js sends it again
     * after each reconnect, with the same message id) show that the broker refuses QoS 2: the
     * maximum drops to 1. Any other close after a CONNACK starts the count again; a failed
     * connection attempt neither counts nor resets it.
     *
     * True when the broker is known to close the connection on QoS 2 publishes (now or at an
     * earlier close): every QoS 2 publish still unanswered is then to be failed and taken back
     * from MQTT.js, which would send it after every reconnect.
     */
    public onClose(): boolean {
        const connected = this._connected;
        const last = this._lastWritten;
        this._connected = false;
        this._lastWritten = null;
        if (this._learnedFrom === 'broker_closed') return true;
        if (!connected) return false;
        if (this._qos2Seen || last?.cmd !== 'publish' || last.qos !== 2 || last.messageId === undefined) {
            this._closesAfter = null;
            return false;
        }
        const closes = this._closesAfter?.messageId === last.messageId ? this._closesAfter.closes + 1 : 1;
        this._closesAfter = { messageId: last.messageId, closes };
        if (closes < CLOSES_TO_GIVE_UP) return false;
        this.learn(1, 'broker_closed');
        return true;
    }
}
