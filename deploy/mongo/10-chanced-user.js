// docker-entrypoint-initdb.d script of compose.yaml's mongo service: runs once, when the
// container initialises an empty volume, as the root user. Creates the logger's user `chanced`
// in the database `chanced`, with readWrite on that database only (the logger inserts, finds,
// aggregates and creates or drops its indexes: nothing more). Its password is the mongo_password
// secret; mongo_url names the user and authSource=chanced.
const password = require('fs').readFileSync('/run/secrets/mongo_password', 'utf8').trim();
db.getSiblingDB('chanced').createUser({
  user: 'chanced',
  pwd: password,
  roles: [{ role: 'readWrite', db: 'chanced' }],
});
