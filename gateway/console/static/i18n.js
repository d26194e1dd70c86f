// French and English UI text: the page's <html lang> (set by the server from Accept-Language) picks one.

const FR = {
  // overview
  'Overview': 'Vue d’ensemble', 'Sources': 'Sources', 'Sinks': 'Destinations', 'Source': 'Source',
  'Adapter': 'Adaptateur', 'Tenant': 'Locataire', 'State': 'État', 'Last message': 'Dernier message',
  'Messages': 'Messages', 'Per minute (30 min)': 'Par minute (30 min)', 'Dead letters': 'Lettres mortes',
  'Sink': 'Destination', 'Kind': 'Type', 'Breaker': 'Disjoncteur', 'Outbox depth': 'File d’attente',
  'Oldest waiting': 'Plus ancien en attente', 'Published': 'Publiés', 'Retrying': 'En réessai',
  'Ready': 'Prête', 'Not ready': 'Pas prête', '(default)': '(par défaut)', 'since {0}': 'depuis {0}',
  '{0} dead letter(s)': '{0} lettre(s) morte(s)', 'updated {0}': 'mis à jour {0}',
  'running': 'en marche', 'unavailable': 'indisponible', 'failed': 'en échec', 'starting': 'démarrage',
  'disabled': 'désactivée', 'closed': 'fermé', 'open': 'ouvert', 'half-open': 'semi-ouvert',
  'messages per minute over the last {0} minutes': 'messages par minute sur les {0} dernières minutes',
  '{0} s ago': 'il y a {0} s', '{0} min ago': 'il y a {0} min', '{0} h ago': 'il y a {0} h', '{0} d ago': 'il y a {0} j',
  // dead letters
  'all sources': 'toutes les sources', 'all stages': 'toutes les étapes', 'Stage': 'Étape',
  'translation': 'traduction', 'validation': 'validation', 'routing': 'routage', 'sink': 'destination',
  'Reason contains': 'Raison contenant', 'text in the reason': 'texte de la raison',
  'Replay selected': 'Rejouer la sélection', 'Replay all shown': 'Rejouer tout ce qui est affiché',
  'No dead letter matches.': 'Aucune lettre morte ne correspond.', 'select all shown': 'tout sélectionner',
  'select dead letter {0}': 'sélectionner la lettre morte {0}', 'When': 'Quand', 'Reason': 'Raison',
  'Pointer': 'Pointeur', 'Loading…': 'Chargement…', 'Replay this one': 'Rejouer celle-ci', 'Delete': 'Supprimer',
  'Dead letter #{0}': 'Lettre morte n° {0}', 'Dead letter #{0} deleted.': 'Lettre morte n° {0} supprimée.',
  ' (not present: its closest parent is marked)': ' (absent : son parent le plus proche est marqué)',
  'Received': 'Reçu', 'Entity': 'Entité', 'Correlation': 'Corrélation', 'Raw payload ({0})': 'Message brut ({0})',
  'unknown type': 'type inconnu', 'Entity that failed': 'Entité refusée', 'Replay': 'Rejeu',
  'Replay of the selection': 'Rejeu de la sélection', 'Replay of {0} dead letter(s)': 'Rejeu de {0} lettre(s) morte(s)',
  'queued {0} entities': '{0} entité(s) mise(s) en file', 'still failing (kept)': 'toujours en échec (conservée)',
  'gone': 'disparue', 'failed: {0}': 'échec : {0}', '(none)': '(aucun)',
  // entities
  'Entities': 'Entités', 'Type': 'Type', 'Search': 'Recherche', 'id or attribute value': 'id ou valeur d’attribut',
  'No entity matches.': 'Aucune entité ne correspond.', 'No entity type in this tenant.': 'Aucun type d’entité chez ce locataire.',
  '{0} of {1} {2}': '{0} sur {1} {2}', 'Id': 'Id', 'Name': 'Nom', 'Last observed': 'Dernière observation',
  '← Entities': '← Entités', 'Attributes': 'Attributs', 'Attribute': 'Attribut', 'Value': 'Valeur', 'Unit': 'Unité',
  'Observed at': 'Observé le', 'History': 'Historique', 'Period': 'Période', 'last hour': 'dernière heure',
  'last 6 hours': '6 dernières heures', 'last 24 hours': '24 dernières heures',
  'last 7 days (min/avg/max per hour)': '7 derniers jours (min/moy/max par heure)',
  'last 30 days (min/avg/max per day)': '30 derniers jours (min/moy/max par jour)',
  'No values in this period': 'Aucune valeur sur cette période', '{0} history, {1} points': '{0} : historique, {1} points', 'tenant {0}': 'locataire {0}',
  // map
  'Map': 'Carte', 'Colour by': 'Couleur selon', 'type': 'type', 'zoom in': 'zoomer', 'zoom out': 'dézoomer',
  'Fit': 'Ajuster', 'legend': 'légende', 'no value': 'sans valeur',
  'No entity with a location in this tenant.': 'Aucune entité localisée chez ce locataire.',
  '{0} entities with a location; outlines: {1}.': '{0} entités localisées ; contours : {1}.',
  'operator-supplied': 'fournis par l’exploitant', 'none configured': 'aucun configuré',
  '{0} entities: zoom in': '{0} entités : zoomer', 'map of {0} located entities': 'carte de {0} entités localisées',
  // conformance
  'Conformance': 'Conformité', 'Profile': 'Profil', 'Target (NGSI-LD API)': 'Cible (API NGSI-LD)',
  'Report language': 'Langue du rapport', 'Target token': 'Jeton de la cible', 'if the target needs one': 'si la cible en exige un',
  'Run': 'Lancer', 'Runs': 'Exécutions', 'No run yet.': 'Aucune exécution.', 'Started': 'Début', 'Target': 'Cible',
  'Result': 'Résultat', 'Reports': 'Rapports', 'Read': 'Lire', 'running…': 'en cours…', 'Report {0}': 'Rapport {0}',
  'Running {0} against {1}: {2}/{3} checks ': '{0} contre {1} : {2}/{3} vérifications ',
  'Clause FR': 'Clause FR', 'Clause EN': 'Clause EN',
  // devices
  'Devices': 'Capteurs', 'DevEUI': 'DevEUI', 'Profile': 'Profil', 'Location': 'Emplacement',
  'Last uplink': 'Dernière remontée', 'RSSI / SNR': 'RSSI / SNR', 'Gateways': 'Passerelles', 'fCnt': 'fCnt',
  'no uplink since the gateway started': 'aucune remontée depuis le démarrage de la passerelle',
  'No device provisioned.': 'Aucun capteur provisionné.', 'auto': 'auto', 'added here': 'ajouté ici',
  '{0} device(s); radio metadata is kept in memory since the gateway started':
    '{0} capteur(s) ; les métadonnées radio sont gardées en mémoire depuis le démarrage de la passerelle',
  'Measures': 'Mesure', 'Required for every device': 'Requis pour chaque capteur', 'Parameters': 'Paramètres',
  'default': 'par défaut', 'Add a device': 'Ajouter un capteur', 'Device profiles': 'Profils de capteurs',
  'No source of this gateway keeps a device registry (LoRaWAN sources do).':
    'Aucune source de cette passerelle ne tient de registre de capteurs (les sources LoRaWAN le font).',
  'DevEUI (16 hex digits)': 'DevEUI (16 chiffres hexadécimaux)',
  'Entity id (default urn:ngsi-ld:<Type>:<DevEUI>)': 'Id de l’entité (par défaut urn:ngsi-ld:<Type>:<DevEUI>)',
  'Tenant (default: the source\u2019s)': 'Locataire (par défaut : celui de la source)',
  'Longitude (WGS84)': 'Longitude (WGS84)', 'Latitude (WGS84)': 'Latitude (WGS84)',
  'Add the device': 'Ajouter le capteur', 'Profile parameters': 'Paramètres du profil',
  'choose a profile': 'choisir un profil',
  'Device {0} added: its uplinks now become {1}.': 'Capteur {0} ajouté : ses remontées alimentent désormais {1}.',
  // app
  'No page named {0}.': 'Aucune page nommée {0}.',
};

/** The UI language: French when the server rendered the page in French. */
export const LANG = document.documentElement.lang === 'fr' ? 'fr' : 'en';

/** `text` in the UI language, with {0}, {1}... replaced by `args`. */
export function t(text, ...args) {
  let out = (LANG === 'fr' && FR[text]) || text;
  args.forEach((a, i) => { out = out.replace(`{${i}}`, String(a)); });
  return out;
}
