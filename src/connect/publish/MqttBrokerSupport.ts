import type { IClientPublishOptions, IClientSubscribeOptions, IConnackPacket, Packet } from 'mqtt';
import { generate } from 'mqtt-packet';
import { BadRequestException, UnsupportedException } from 'pip-services3-commons-nodex';

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

/** MQTT 5: the receive maximum of a broker that gives none (section 3.2.2.3.3). */
const DEFAULT_RECEIVE_MAXIMUM = 65535;

/**
 * What the broker supports, and every check of a publish or subscribe against it. Its MQTT 5
 * CONNACK gives the largest packet it takes and how many QoS 1/2 publishes it takes
 * unacknowledged (its receive maximum); both are kept while disconnected (MQTT.js forgets them
 * at the close), so publishes made offline are held to them too. Its MQTT 5 CONNACK may also say that it has no retained messages, wildcard
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
    private _receiveMaximum = DEFAULT_RECEIVE_MAXIMUM;
    /** MQTT 5: the largest packet the broker accepts, when it said. */
    private _maximumPacketSize: number | undefined;

    /**
     * @param _configured   `options.max_qos`.
     * @param _protocolVersion the MQTT version in use: only MQTT 5 has packet size limits.
     * @param _topicAliases MQTT 5: our publishes use topic aliases (they take room in the packet).
     */
    public constructor(
        private readonly _configured: Qos,
        private readonly _displayUri: string,
        private readonly _protocolVersion: 3 | 4 | 5 = 4,
        private readonly _topicAliases = false,
    ) {
        this._max = _configured;
    }

    /** MQTT 5: the QoS 1/2 publishes the broker accepts unacknowledged, from its last CONNACK. */
    public get receiveMaximum(): number {
        return this._receiveMaximum;
    }

    /** The highest QoS to publish or subscribe with. */
    public get max(): Qos {
        return this._max;
    }

    /** Reads a CONNACK (MQTT 5: its maximum QoS, a missing one meaning 2, its limits and features). */
    public onConnack(packet: Pick<IConnackPacket, 'returnCode' | 'reasonCode' | 'properties'>): void {
        // A refused attempt leaves the limits of the broker last connected to, which offline publishes keep to.
        if ((packet.returnCode ?? packet.reasonCode ?? 0) !== 0) return;
        this._receiveMaximum = packet.properties?.receiveMaximum ?? DEFAULT_RECEIVE_MAXIMUM;
        this._maximumPacketSize = packet.properties?.maximumPacketSize;
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

    /**
     * Checks a publish against what the broker takes: (MQTT 5) its maximum packet size, the QoS,
     * and a retained message.
     * @throws BadRequestException `MQTT_INVALID_PAYLOAD`, UnsupportedException `MQTT_QOS_NOT_SUPPORTED`
     *   or `MQTT_FEATURE_NOT_SUPPORTED`.
     */
    public checkPublish(topic: string, data: Buffer | string, options: IClientPublishOptions): void {
        if (this._protocolVersion === 5) this.checkPacketSize(topic, data, options);
        this.checkQos(topic, options.qos ?? 0, 'publish');
        if (options.retain === true && this.lacks('retain')) throw this.featureRefusal(topic, 'retain', 'publish a retained message to');
    }

    /**
     * Checks a subscribe against what the broker supports: its QoS, and (MQTT 5) the wildcard and
     * shared subscriptions and subscription identifiers its CONNACK says it lacks.
     * @throws UnsupportedException `MQTT_QOS_NOT_SUPPORTED` or `MQTT_FEATURE_NOT_SUPPORTED`.
     */
    public checkSubscribe(topic: string, options: IClientSubscribeOptions, shared: boolean, wildcard: boolean): void {
        this.checkQos(topic, options.qos ?? 0, 'subscribe');
        if (shared && this.lacks('shared_subscriptions')) throw this.featureRefusal(topic, 'shared_subscriptions', 'subscribe to');
        if (wildcard && this.lacks('wildcard_subscriptions')) throw this.featureRefusal(topic, 'wildcard_subscriptions', 'subscribe to');
        if (options.properties?.subscriptionIdentifier !== undefined && this.lacks('subscription_identifiers')) {
            throw this.featureRefusal(topic, 'subscription_identifiers', 'subscribe with a subscription identifier to');
        }
    }

    /** @throws UnsupportedException `MQTT_QOS_NOT_SUPPORTED` for a QoS above the maximum; `what` is 'publish' or 'subscribe'. */
    public checkQos(topic: string, qos: number, what: string): void {
        if (qos > this._max) throw this.refusal(topic, qos, what);
    }

    /**
     * MQTT 5: refuses a publish above the broker's maximum packet size (from its last CONNACK).
     * Sent, it would make the broker drop the connection, and MQTT.js would send it again after
     * every reconnect.
     */
    private checkPacketSize(topic: string, data: Buffer | string, options: IClientPublishOptions): void {
        const maximum = this._maximumPacketSize;
        if (maximum === undefined || publishFits(topic, data, options, maximum, this._topicAliases)) return;
        throw new BadRequestException(NO_CID, MqttErrorCode.InvalidPayload,
            `Invalid MQTT payload: the message does not fit in the broker's maximum packet size of ${maximum} bytes`)
            .withDetails('topic', topic).withDetails('limit', maximum);
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

/** More than the fixed header, topic length, packet id and empty properties of a PUBLISH take. */
const HEADER_ALLOWANCE = 64;

/**
 * Whether an MQTT 5 PUBLISH fits in `maximum` bytes (the broker's maximum packet size). Counted
 * with mqtt-packet, MQTT.js's own codec, only when the payload and topic alone leave it unclear.
 */
function publishFits(topic: string, payload: Buffer | string, options: IClientPublishOptions, maximum: number, aliased = false): boolean {
    const bulk = Buffer.byteLength(topic, 'utf8') + (Buffer.isBuffer(payload) ? payload.length : Buffer.byteLength(payload, 'utf8'));
    if (bulk > maximum) return false;
    // MQTT.js adds a topic alias (3 bytes) to a publish with its full topic when aliases are on.
    const properties = { ...(options.properties ?? {}), ...(aliased && options.properties?.topicAlias === undefined ? { topicAlias: 1 } : {}) };
    if (Object.keys(properties).length === 0 && bulk + HEADER_ALLOWANCE <= maximum) return true;
    const qos = options.qos ?? 0;
    const packet = generate({
        cmd: 'publish', topic, payload, qos, retain: options.retain ?? false, dup: false,
        ...(qos > 0 ? { messageId: 1 } : {}), properties,
    }, { protocolVersion: 5 });
    return packet.length <= maximum;
}
