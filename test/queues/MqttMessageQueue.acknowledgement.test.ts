import { mosquittoSkip, startAedes, startMosquitto } from '../helpers/brokers';
import { describeQueueAcknowledgement } from './MqttQueueAcknowledgement';

describeQueueAcknowledgement('the embedded broker (Aedes)', () => startAedes(), false);
describeQueueAcknowledgement('Mosquitto', () => startMosquitto(), mosquittoSkip());
